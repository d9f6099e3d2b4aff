"""The integration layer: learning rules as NNI mutables. The only rule-side module importing ``nni.nas``.

``rule_choice`` makes the rule of one layer searchable; ``op_rule_choice`` makes op and rule of one
slot searchable together (candidates ``op@rule``). Both are ``LayerChoice`` s keyed by candidate
names in a deterministic order, so samples, exported genotypes and the NNI web UI carry names.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from nni_bio.nas import _compat

_compat.apply()

from nni.nas.nn.pytorch import LayerChoice, ModelSpace  # noqa: E402
from nni.mutable import CategoricalMultiple  # noqa: E402
from torch import nn  # noqa: E402

from nni_bio.core._registry import get_rule  # noqa: E402
from nni_bio.core.errors import NniBioError  # noqa: E402
from nni_bio.nas.candidates import OpBuilder, check_rules, op_rule_candidates  # noqa: E402

__all__ = ["InvalidSampleError", "LayerChoice", "ModelSpace", "op_rule_choice", "rule_choice", "search_space_json", "freeze"]


def rule_choice(kind: str, *, rules: Iterable[str], label: str, **shape: Any) -> LayerChoice:
    """A layer whose learning rule is searched: one candidate per rule, keyed by rule name.

    Args:
        kind: ``"linear"`` or ``"conv2d"``.
        rules: rule names (any registered rule, plugins included).
        label: the NNI label (the key in samples and in the search-space JSON).
        **shape: the layer's arguments, as for ``rule.linear`` / ``rule.conv2d``.

    Example:
        >>> from nni_bio.nas.mutables import rule_choice
        >>> layer = rule_choice("linear", rules=["usf", "fa"], label="fc1", in_features=4, out_features=2)
        >>> list(layer.names)
        ['fa', 'usf']
    """
    candidates = {}
    for name in check_rules(rules):
        rule = get_rule(name)
        if kind == "linear":
            candidates[name] = rule.linear(**shape)
        elif kind == "conv2d":
            conv = dict(shape)
            candidates[name] = rule.conv2d(conv.pop("in_channels"), conv.pop("out_channels"),
                                           conv.pop("kernel_size"), **conv)
        else:
            raise ValueError(f"kind must be 'linear' or 'conv2d', not {kind!r}")
    return LayerChoice(candidates, label=label)


def op_rule_choice(ops: Mapping[str, OpBuilder], *, rules: Iterable[str], label: str,
                   parameter_free: Iterable[str] = ()) -> LayerChoice:
    """A slot whose op and rule are searched together (candidates ``op@rule``; parameter-free ops once)."""
    return LayerChoice(op_rule_candidates(ops, rules, parameter_free), label=label)


def search_space_json(space: ModelSpace) -> dict[str, dict]:
    """The HPO search space NNI tuners read (``{label: {"_type": "choice", "_value": [...]}}``).

    A one-of-n input choice (``InputChoice``, the inputs of a ``Cell``) becomes a choice over the
    input indices; :func:`freeze` turns the tuner's index back into NNI's ``[index]``.
    """
    return {label: _legacy_dict(mutable) for label, mutable in sorted(space.simplify().items())}


def _legacy_dict(mutable: Any) -> dict:
    if isinstance(mutable, CategoricalMultiple) and mutable.n_chosen == 1:
        return {"_type": "choice", "_value": list(mutable.values)}
    return mutable.as_legacy_dict()


class InvalidSampleError(NniBioError, ValueError):
    """A sample or genotype names a candidate its space does not offer (or lacks a slot)."""


def freeze(space: ModelSpace, sample: Mapping[str, Any]) -> nn.Module:
    """The concrete network of ``space`` for ``sample``.

    Raises:
        InvalidSampleError: a label is missing, or a value is not one of its slot's candidates (the
            message lists that slot's candidates, in one line).
    """
    from nni.mutable import Categorical, SampleValidationError

    mutables = space.simplify()
    missing = sorted(set(mutables) - set(sample))
    if missing:
        raise InvalidSampleError(f"the sample lacks the slot(s) {', '.join(missing)}; it has {', '.join(sorted(sample))}")
    sample = dict(sample)
    for label, mutable in mutables.items():  # an HPO tuner gives an input choice as an index
        if isinstance(mutable, CategoricalMultiple) and mutable.n_chosen == 1 and isinstance(sample[label], int):
            sample[label] = [sample[label]]
        if isinstance(mutable, Categorical) and sample[label] not in mutable.values:
            raise InvalidSampleError(f"slot {label!r}: {sample[label]!r} is not offered by this space; its candidates: "
                                     f"{', '.join(map(str, mutable.values))}")
    try:
        return space.freeze(sample)
    except SampleValidationError as exc:  # anything the check above does not know: still one line
        raise InvalidSampleError(f"the sample does not fit the space: {str(exc).splitlines()[0]}") from exc


def dumps_space(space: ModelSpace) -> str:
    return json.dumps(search_space_json(space), indent=2, sort_keys=True)
