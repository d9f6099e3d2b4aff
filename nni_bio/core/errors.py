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
    """Something that is not a rule name or a :class:`~nni_bio.core.rule.LearningRule` instance was given as a rule."""


class RuleContractError(NniBioError, RuntimeError):
    """A rule broke the contract at run time, e.g. feedback that would leak gradient into W."""


class UnsupportedLayerError(NniBioError, ValueError):
    """A rule was asked for a layer kind or configuration it does not support."""


class DFAWiringError(NniBioError, RuntimeError):
    """A direct-feedback layer ran its backward without a network output error to project."""


class RuleStateError(NniBioError, RuntimeError):
    """A checkpoint or state dict belongs to another rule than the layer it is loaded into."""


class OutputWriteError(NniBioError, OSError):
    """A file could not be written: read-only folder, full disk, file-size limit. Earlier files are intact."""

    def __str__(self) -> str:
        return str(self.strerror)


def write_failure(path: object, exc: BaseException) -> OutputWriteError:
    """One line naming ``path``, the cause, the free space where it matters, and the fix.

    Example:
        >>> import errno
        >>> str(write_failure("/data/run/checkpoint.pt", OSError(errno.EROFS, "Read-only file system")))[:62]
        '/data/run/checkpoint.pt: cannot write (Read-only file system);'
    """
    import errno
    import os
    import shutil

    code = getattr(exc, "errno", None)
    cause = getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    folder = os.path.dirname(os.path.abspath(str(path))) or "."
    while folder and not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        left = shutil.disk_usage(folder).free
        free = (f"{left / 2**20:,.0f} MiB" if left >= 10 * 2**20 else f"{left / 1024:,.0f} KiB") + " free on that disk"
    except OSError:
        free = "free space unknown"
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "the folder is not writable: choose another --output, or make it writable"
    elif code in (errno.ENOSPC, errno.EDQUOT):
        fix = (f"the disk is full ({free}): free some space or choose another --output, then run the same "
               "command again (with --resume where it has one)")
    elif code == errno.EFBIG:
        fix = (f"the file would exceed this shell's file-size limit (`ulimit -f`; {free}): raise the limit, then "
               "run the same command again (with --resume where it has one)")
    else:
        fix = f"check the path ({free})"
    return OutputWriteError(code or 0, f"{path}: cannot write ({cause}); {fix}. Files written before are intact.")
