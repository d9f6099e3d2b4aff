"""Candidate names of op x rule choices, and building the candidate modules (pure PyTorch).

Also the one helper every reader of a tuner's sample needs: :func:`unwrap_choice`.

A candidate of a searchable slot is named ``op@rule`` for an op with weights (``sep_conv_3x3@usf``)
and plain ``op`` for a parameter-free op (``max_pool_3x3``), which gets one candidate whatever the
rules. The names become ``LayerChoice`` keys, genotype entries and NNI hyperparameter values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn

from nni_bio.core._registry import get_rule
from nni_bio.core.errors import UnsupportedLayerError

SEPARATOR = "@"

#: builds an op for a rule name (None for parameter-free ops)
OpBuilder = Callable[[str | None], nn.Module]


def candidate_name(op: str, rule: str | None) -> str:
    """``op@rule``, or ``op`` when the op has no rule."""
    return op if rule is None else f"{op}{SEPARATOR}{rule}"


def parse_candidate(name: str) -> tuple[str, str | None]:
    """Inverse of :func:`candidate_name`: ``"sep_conv_3x3@usf"`` -> ``("sep_conv_3x3", "usf")``."""
    op, sep, rule = name.partition(SEPARATOR)
    return op, (rule if sep else None)


def check_rules(rules: Iterable[str]) -> list[str]:
    """Validate rule names (did-you-mean errors for unknown ones); return them sorted, without duplicates."""
    names = sorted(set(rules))
    if not names:
        raise ValueError("at least one learning rule is needed")
    for name in names:
        get_rule(name)
    return names


def input_layer_rules(rules: Iterable[str]) -> list[str]:
    """The rules worth searching in a network's first weight layer.

    A rule of family ``backprop``, ``feedback`` or ``direct`` changes only the error a layer sends to
    its input, and the input of the first layer is the image, which nothing learns from: in that
    layer all such rules train identically. They collapse into one representative (the first bio rule
    in sorted order, else ``backprop``), so a space never multiplies its size by choices that cannot
    change training. Rules that change the layer's own update (family ``local``, e.g. Hebbian) stay.

    Example:
        >>> input_layer_rules(["usf", "fa", "backprop", "dfa"])
        ['dfa']
    """
    names = check_rules(rules)
    families = {name: get_rule(name).info.family for name in names}
    error_only = [n for n in names if families[n] != "local"]
    own_update = [n for n in names if families[n] == "local"]
    representative = [n for n in error_only if families[n] != "backprop"][:1] or error_only[:1]
    return sorted(representative + own_update)


def op_rule_candidates(
    ops: Mapping[str, OpBuilder], rules: Iterable[str], parameter_free: Iterable[str] = (),
) -> dict[str, nn.Module]:
    """One module per (op, rule) pair, or per op for parameter-free ops, in a deterministic order
    (ops in the given order, rules sorted). Pairs a rule cannot build (a depthwise conv with a rule
    without grouped-conv support) are left out."""
    rules, free = check_rules(rules), set(parameter_free)
    out: dict[str, nn.Module] = {}
    for op, build in ops.items():
        for rule in [None] if op in free else rules:
            try:
                out[candidate_name(op, rule)] = build(rule)
            except UnsupportedLayerError:
                continue
    if not out:
        raise UnsupportedLayerError(f"none of the ops {list(ops)} can be built with the rules {rules}")
    return out


def unwrap_choice(value: Any) -> Any:
    """Tuners of NNI's NAS format send ``{"_value": v, "_idx": i}``; others send ``v``."""
    return value["_value"] if isinstance(value, dict) and "_value" in value else value
