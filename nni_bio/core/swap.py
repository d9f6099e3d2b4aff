"""Switch the learning rule of every rule layer in a model while keeping the weights."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping

from torch import nn

from nni_bio.core._registry import get_rule
from nni_bio.core.error_bus import enable_dfa, error_bus
from nni_bio.core.layers import RuleLayer
from nni_bio.core.rule import LearningRule

RuleSpec = str | LearningRule | Mapping[str, str] | Callable[[str, RuleLayer], str | None]


def swap_rule(model: nn.Module, rule: RuleSpec) -> nn.Module:
    """Give the rule layers of ``model`` another learning rule, in place; weights are kept.

    Args:
        model: any module containing :class:`~nni_bio.core.layers.RuleLayer` s.
        rule: one rule (name or object) for every layer; or a mapping of fnmatch patterns over
            module names to rule names (first match wins, unmatched layers keep their rule); or a
            callable ``(module_name, layer) -> rule name or None``.

    Typical uses: evaluate a rule-trained network through exact backprop (``swap_rule(net,
    "backprop")``), or fine-tune a BP-trained network with a sign-symmetry rule. A layer that already
    has the rule keeps its state (FA's B, brSF's step); the others get fresh rule state drawn from
    their own seed. Rebuild the optimizer afterwards if a rule with learned feedback (``kp``) came in
    or went out.

    Example:
        >>> import torch, nni_bio
        >>> net = torch.nn.Sequential(nni_bio.get_rule("usf").linear(4, 4), torch.nn.ReLU(),
        ...                           nni_bio.get_rule("fa").linear(4, 2))
        >>> [m.rule_name for m in nni_bio.swap_rule(net, {"0": "backprop"}).modules() if hasattr(m, "rule_name")]
        ['backprop', 'fa']
    """
    chooser = _chooser(rule)
    swapped_in_global_error = False
    for name, module in model.named_modules():
        if isinstance(module, RuleLayer):
            choice = chooser(name, module)
            if choice is not None:
                rule = get_rule(choice)
                module.set_rule(rule)
                swapped_in_global_error |= rule.info.needs_global_error
    if error_bus(model) is not None or swapped_in_global_error:
        enable_dfa(model)
    return model


def _chooser(rule: RuleSpec) -> Callable[[str, RuleLayer], str | LearningRule | None]:
    if isinstance(rule, (str, LearningRule)):
        resolved = get_rule(rule)
        return lambda name, layer: resolved
    if isinstance(rule, Mapping):
        patterns = [(pattern, get_rule(r)) for pattern, r in rule.items()]
        return lambda name, layer: next((r for p, r in patterns if fnmatch.fnmatchcase(name, p)), None)
    if callable(rule):
        return rule
    raise TypeError(f"rule must be a rule name, a LearningRule, a mapping or a callable, not {type(rule).__name__}")


def rule_map(model: nn.Module) -> dict[str, str]:
    """Module name -> rule name of every rule layer in ``model`` (what a report or genotype records)."""
    return {name: m.rule_name for name, m in model.named_modules() if isinstance(m, RuleLayer)}


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """``trainable_params`` (forward weights, biases, BN...) and ``learned_feedback_params`` (a rule's trained
    feedback, e.g. Kolen-Pollack's B: trained, but not part of the network's function), counted apart.

    Example:
        >>> from nni_bio import get_rule
        >>> from nni_bio.core.layers import RuleLinear
        >>> parameter_counts(RuleLinear(4, 2, rule=get_rule("kp")))
        {'trainable_params': 10, 'learned_feedback_params': 8}
    """
    feedback = {id(p) for module in model.modules() if isinstance(module, RuleLayer)
                for name, p in module.named_parameters() if name not in ("weight", "bias")}
    trainable = [p for p in model.parameters() if p.requires_grad]
    return {"trainable_params": sum(p.numel() for p in trainable if id(p) not in feedback),
            "learned_feedback_params": sum(p.numel() for p in trainable if id(p) in feedback)}
