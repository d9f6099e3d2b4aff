"""The exceptions nni-bio raises. Every one derives from :class:`NniBioError`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class NniBioError(Exception):
    """Base class of every error raised on purpose by nni-bio."""


class UnknownRuleError(NniBioError, LookupError):
    """A rule name that no installed distribution provides."""

    def __init__(self, name: str, available: Iterable[str]):
        self.name = name
        self.available = sorted(available)
        close = difflib.get_close_matches(name, self.available, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(
            f"unknown learning rule {name!r}.{hint} Available rules: {', '.join(self.available) or '(none)'}. "
            "Run `nni-bio rules` to see where each comes from; a plugin rule appears once its "
            "distribution is pip-installed in this environment."
        )


class RuleCollisionError(NniBioError):
    """Two providers offer the same rule name."""


class PluginLoadError(NniBioError):
    """A plugin's entry point failed to import or did not give a learning rule."""


class IncompatiblePluginError(NniBioError):
    """A plugin targets a plugin API version this nni-bio does not support, or declares none."""


class RuleTypeError(NniBioError, TypeError):
    """Something that is not a rule name or a :class:`~nni_bio.rule.LearningRule` instance was given as a rule."""


class RuleContractError(NniBioError, RuntimeError):
    """A rule broke the contract at run time, e.g. feedback that would leak gradient into W."""


class UnsupportedLayerError(NniBioError, ValueError):
    """A rule was asked for a layer kind or configuration it does not support."""


class DFAWiringError(NniBioError, RuntimeError):
    """A direct-feedback layer ran its backward without a network output error to project."""


class RuleStateError(NniBioError, RuntimeError):
    """A checkpoint or state dict belongs to another rule than the layer it is loaded into."""
