"""Any timm model as a search space over learning rules: one rule choice per stage (or per block).

"Which rule in which stage of ResNet-18?" runs under ``nnictl create`` like every other space::

    python3 -m nni_bio.trial --space timm_rules --space-args '{"model": "resnet18", "rules": ["fa", "usf"]}' ...

The model is built without weights (``pretrained=False``) for the data set's channels, classes and, where the
model takes one, image size (:func:`nni_bio.core.timm_models.build_timm`); ``model_args`` go to its constructor
(e.g. ``{"patch_size": 4}`` for a ViT on 32x32 images). The groups that get a rule choice are the model's
top-level children holding weight layers (``granularity="stage"``: ResNet's ``conv1``, ``layer1``..``layer4``,
``fc``; ViT's ``patch_embed``, ``blocks``, ``head``), or with ``granularity="block"`` the children of its
top-level ``Sequential``/``ModuleList`` containers too (``layer1.0``, ``layer1.1``, ..., ``blocks.0``, ...).
Labels are the module names with ``_`` for ``.``. A group that is the network's first weight layer alone is
not searched (every error-only rule gives it the exact local gradient) unless a rule with its own update is
offered; then its error-only candidate is named by the layer kind (``conv2d``).

Example:
    >>> from nni_bio.search_spaces.timm_rules import TimmRulesSpace
    >>> space = TimmRulesSpace("resnet10t", in_channels=1, num_classes=10, image_size=28, rules=["fa", "usf"])
    >>> sorted(space.simplify())
    ['fc', 'layer1', 'layer2', 'layer3', 'layer4']
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from nni_bio.core._registry import get_rule
from nni_bio.core.layers import RuleLayer, RuleLinear
from nni_bio.nas.candidates import check_rules, input_layer_rules, rule_choice_key
from nni_bio.nas.mutables import LayerChoice, ModelSpace
from nni_bio.search_spaces._genotype import GenotypeMixin

DEFAULT_RULES = ("backprop", "brsf", "fa", "frsf", "usf")


def _holds_weights(module: nn.Module) -> bool:
    return any(isinstance(m, RuleLayer) for m in module.modules())


def rule_groups(net: nn.Module, granularity: str = "stage") -> list[str]:
    """The module names that get one rule choice each, in module order."""
    if granularity not in ("stage", "block"):
        raise ValueError(f"granularity must be 'stage' or 'block', got {granularity!r}")
    groups = []
    for name, child in net.named_children():
        if not _holds_weights(child):
            continue
        if granularity == "block" and isinstance(child, (nn.Sequential, nn.ModuleList)):
            groups += [f"{name}.{sub}" for sub, grandchild in child.named_children() if _holds_weights(grandchild)]
        else:
            groups.append(name)
    return groups


def _with_rule(part: nn.Module, rule: str) -> nn.Module:
    """Every rule layer of ``part`` on ``rule`` (DFA is wired to the whole network's output when it trains)."""
    for module in part.modules():
        if isinstance(module, RuleLayer):
            module.set_rule(get_rule(rule))
    return part


class TimmRulesSpace(GenotypeMixin, ModelSpace):
    """A timm model whose every stage (or block) picks its learning rule."""

    space_name = "timm_rules"

    def __init__(self, model: str = "resnet18", in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
                 rules: Sequence[str] = DEFAULT_RULES, granularity: str = "stage",
                 model_args: Mapping[str, Any] | None = None):
        super().__init__()
        from nni_bio.core.timm_models import build_timm

        rules = check_rules(list(rules))
        with torch.random.fork_rng(devices=[]):
            net = build_timm(model, in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                             model_args=model_args)
        first = next(name for name, m in net.named_modules() if isinstance(m, RuleLayer))
        kind = "linear" if isinstance(net.get_submodule(first), RuleLinear) else "conv2d"
        for group in rule_groups(net, granularity):
            part = net.get_submodule(group)
            layers = [n for n, m in part.named_modules(prefix=group) if isinstance(m, RuleLayer)]
            alone = layers == [first]  # the first weight layer, on its own: only rules that change its training
            offered = input_layer_rules(rules) if alone else rules
            candidates = {rule_choice_key(rule, kind, alone): _with_rule(copy.deepcopy(part), rule)
                          for rule in offered}
            if alone and len(candidates) == 1:
                net.set_submodule(group, next(iter(candidates.values())))
                continue
            choice = LayerChoice(candidates, label=group.replace(".", "_"))
            choice.input_layer = alone
            net.set_submodule(group, choice)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
