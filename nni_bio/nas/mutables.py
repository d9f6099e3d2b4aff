"""The integration layer: learning rules as NNI mutables. The only rule-side module importing ``nni.nas``.

``rule_choice`` makes the rule of one layer searchable; ``op_rule_choice`` makes op and rule of one
slot searchable together (candidates ``op@rule``). Both are ``LayerChoice`` s keyed by candidate
names in a deterministic order, so samples, exported genotypes and the NNI web UI carry names.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from nni_bio.nas import _compat

_compat.apply()

from nni.nas.nn.pytorch import LayerChoice, ModelSpace  # noqa: E402
from nni.mutable import CategoricalMultiple  # noqa: E402
from torch import nn  # noqa: E402

from nni_bio.core._registry import get_rule  # noqa: E402
from nni_bio.core.errors import NniBioError  # noqa: E402
from nni_bio.nas.candidates import (OpBuilder, canonical_candidate, check_rules, input_layer_rules,  # noqa: E402
                                    op_rule_candidates, rule_choice_key)

__all__ = ["InvalidSampleError", "LayerChoice", "ModelSpace", "op_rule_choice", "rule_choice", "rule_layer",
           "search_space_json", "freeze", "input_layer_labels"]


def rule_layer(kind: str, rule: str, **shape: Any) -> nn.Module:
    """One ``kind`` (``"linear"`` or ``"conv2d"``) layer trained by ``rule``; ``shape`` as for ``rule.linear``/``rule.conv2d``."""
    built = get_rule(rule)
    if kind == "linear":
        return built.linear(**shape)
    if kind == "conv2d":
        conv = dict(shape)
        return built.conv2d(conv.pop("in_channels"), conv.pop("out_channels"), conv.pop("kernel_size"), **conv)
    raise ValueError(f"kind must be 'linear' or 'conv2d', not {kind!r}")


def rule_choice(kind: str, *, rules: Iterable[str], label: str, input_layer: bool = False,
                **shape: Any) -> LayerChoice | nn.Module:
    """A layer whose learning rule is searched: one candidate per rule, keyed by rule name.

    Args:
        kind: ``"linear"`` or ``"conv2d"``.
        rules: rule names (any registered rule, plugins included).
        label: the NNI label (the key in samples and in the search-space JSON).
        input_layer: the network's first weight layer: its error-only rules are one candidate, keyed ``kind``
            (its update is the exact local gradient under each of them); with nothing else to choose, the
            layer itself is returned, not a choice.
        **shape: the layer's arguments, as for ``rule.linear`` / ``rule.conv2d``.

    Example:
        >>> from nni_bio.nas.mutables import rule_choice
        >>> layer = rule_choice("linear", rules=["usf", "fa"], label="fc1", in_features=4, out_features=2)
        >>> list(layer.names)
        ['fa', 'usf']
    """
    names = input_layer_rules(rules) if input_layer else check_rules(rules)
    candidates = {rule_choice_key(name, kind, input_layer): rule_layer(kind, name, **shape)
                  for name in names}
    if input_layer and len(candidates) == 1:
        return next(iter(candidates.values()))
    choice = LayerChoice(candidates, label=label)
    choice.input_layer = input_layer
    return choice


def op_rule_choice(ops: Mapping[str, OpBuilder], *, rules: Iterable[str], label: str,
                   parameter_free: Iterable[str] = (), input_layer: bool = False) -> LayerChoice:
    """A slot whose op and rule are searched together (candidates ``op@rule``; parameter-free ops once).

    ``input_layer=True``: the network's first weight layer, whose candidates under error-only rules are named
    by the op alone (:func:`nni_bio.candidates.op_rule_candidates`).
    """
    choice = LayerChoice(op_rule_candidates(ops, rules, parameter_free, input_layer=input_layer), label=label)
    choice.input_layer = input_layer
    return choice


def input_layer_labels(space: nn.Module) -> set[str]:
    """The labels of ``space``'s first-weight-layer choices (made with ``input_layer=True``)."""
    return {m.label for m in space.modules() if isinstance(m, LayerChoice) and getattr(m, "input_layer", False)}


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


class FirstLayerNote(UserWarning):
    """A sample named an error-only rule in a first weight layer; it was read as the op alone."""


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
    first_layers = input_layer_labels(space)
    for label, mutable in mutables.items():  # an HPO tuner gives an input choice as an index
        if isinstance(mutable, CategoricalMultiple) and mutable.n_chosen == 1 and isinstance(sample[label], int):
            sample[label] = [sample[label]]
        canonical = canonical_candidate(sample[label], mutable.values) if isinstance(mutable, Categorical) else None
        if canonical is not None and label in first_layers:
            warnings.warn(f"slot {label!r} is the first weight layer: under every error-only rule its update is the "
                          f"exact local gradient, so {sample[label]!r} is read as {canonical!r}", FirstLayerNote,
                          stacklevel=2)
            sample[label] = canonical
        if isinstance(mutable, Categorical) and sample[label] not in mutable.values:
            raise InvalidSampleError(f"slot {label!r}: {sample[label]!r} is not offered by this space; its candidates: "
                                     f"{', '.join(map(str, mutable.values))}")
    try:
        return space.freeze(sample)
    except SampleValidationError as exc:  # anything the check above does not know: still one line
        raise InvalidSampleError(f"the sample does not fit the space: {str(exc).splitlines()[0]}") from exc


def dumps_space(space: ModelSpace) -> str:
    return json.dumps(search_space_json(space), indent=2, sort_keys=True)
