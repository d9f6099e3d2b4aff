"""Candidate names of op x rule choices, and building the candidate modules (pure PyTorch).

Also the one helper every reader of a tuner's sample needs: :func:`unwrap_choice`.

A candidate of a searchable slot is named ``op@rule`` for an op with weights (``sep_conv_3x3@usf``)
and plain ``op`` for a parameter-free op (``max_pool_3x3``), which gets one candidate whatever the
rules. The names become ``LayerChoice`` keys, genotype entries and NNI hyperparameter values.

A network's first weight layer is the exception. Its input is the image, so every error-only rule
(family ``backprop``, ``feedback`` or ``direct``) gives it the same update, the exact local gradient;
those candidates are one candidate, named by the op alone (``conv_3x3``; ``conv2d`` or ``linear`` in a
rule-only choice), and printed as ``EXACT_LOCAL_GRADIENT``. A sample or genotype that names any
error-only rule there (``conv_3x3@fa``) is read as that candidate (:func:`canonical_candidate`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn

from nni_bio.core._registry import get_rule
from nni_bio.core.errors import UnknownRuleError, UnsupportedLayerError

SEPARATOR = "@"
#: how a printed architecture names the rule of a first-layer candidate named by its op alone
EXACT_LOCAL_GRADIENT = "exact local gradient"
#: the key of a rule-only first-layer choice's error-only candidate, by layer kind
INPUT_LAYER_KINDS = ("conv2d", "linear")

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


def changes_first_layer(rule: str) -> bool:
    """Whether ``rule`` trains a first weight layer differently from the exact local gradient (family ``local``)."""
    return get_rule(rule).info.family == "local"


def op_rule_candidates(
    ops: Mapping[str, OpBuilder], rules: Iterable[str], parameter_free: Iterable[str] = (),
    input_layer: bool = False,
) -> dict[str, nn.Module]:
    """One module per (op, rule) pair, or per op for parameter-free ops, in a deterministic order
    (ops in the given order, rules sorted). Pairs a rule cannot build (a depthwise conv with a rule
    without grouped-conv support) are left out.

    ``input_layer=True`` (a network's first weight layer): the error-only rules give one candidate per
    op, named by the op alone and built with :func:`input_layer_rules`' representative; rules with an
    update of their own stay ``op@rule``.

    Example:
        >>> sorted(op_rule_candidates({"conv": lambda rule: nn.Identity()}, ["fa", "usf"], input_layer=True))
        ['conv']
    """
    rules, free = check_rules(rules), set(parameter_free)
    if input_layer:
        rules = input_layer_rules(rules)
    out: dict[str, nn.Module] = {}
    for op, build in ops.items():
        for rule in [None] if op in free else rules:
            name = op if input_layer and rule is not None and not changes_first_layer(rule) else candidate_name(op, rule)
            try:
                out[name] = build(rule)
            except UnsupportedLayerError:
                continue
    if not out:
        raise UnsupportedLayerError(f"none of the ops {list(ops)} can be built with the rules {rules}")
    return out


def rule_choice_key(rule: str, kind: str, input_layer: bool) -> str:
    """The key of ``rule``'s candidate in a rule-only choice: the rule's name, or in a first weight layer the
    layer ``kind`` (``conv2d``/``linear``) for every error-only rule."""
    return kind if input_layer and not changes_first_layer(rule) else rule


def canonical_candidate(value: object, offered: Iterable[object]) -> str | None:
    """The candidate of ``offered`` that a first-layer ``value`` naming an error-only rule stands for, else None.

    ``conv_3x3@fa`` -> ``conv_3x3``, and a rule name (``usf``) -> the one ``conv2d``/``linear`` candidate
    of a rule-only choice; never for a rule with an update of its own, or a slot that offers ``value``.

    Example:
        >>> canonical_candidate("conv_3x3@usf", ["conv_3x3", "conv_5x5"])
        'conv_3x3'
        >>> canonical_candidate("usf", ["conv2d"]) , canonical_candidate("usf", ["fa", "usf"])
        ('conv2d', None)
    """
    offered = [v for v in offered if isinstance(v, str)]
    if not isinstance(value, str) or value in offered:
        return None
    op, rule = parse_candidate(value)
    if rule is None:  # a rule-only choice: the value is a rule name
        op, rule = None, value
    try:
        if changes_first_layer(rule):
            return None
    except UnknownRuleError:  # not a rule name: nothing to read it as
        return None
    if op is not None:
        return op if op in offered else None
    kinds = [v for v in offered if v in INPUT_LAYER_KINDS]
    return kinds[0] if len(kinds) == 1 else None


def describe_candidate(value: object, input_layer: bool = False) -> str:
    """``op @ rule`` for printing; a first-layer candidate named by its op alone says ``exact local gradient``.

    Example:
        >>> describe_candidate("sep_conv_3x3@usf"), describe_candidate("conv_3x3", input_layer=True)
        ('sep_conv_3x3 @ usf', 'conv_3x3 @ exact local gradient')
    """
    op, rule = parse_candidate(str(value))
    if rule is None and input_layer:
        rule = EXACT_LOCAL_GRADIENT
    return f"{op} @ {rule}" if rule else op


def unwrap_choice(value: Any) -> Any:
    """Tuners of NNI's NAS format send ``{"_value": v, "_idx": i}``; others send ``v``."""
    return value["_value"] if isinstance(value, dict) and "_value" in value else value
