"""A fixed ResNet skeleton (ResNet-20/32/56 style, CIFAR layout) where only each layer's learning
rule is searched.

Depth 6n+2: a 3x3 stem conv, three stages of n basic blocks (widths w, 2w, 4w; stride 2 at the
start of stages 2 and 3, with a 1x1 projection shortcut there) and a linear classifier. Every conv
and the classifier carry their own rule choice, labelled by position (``s2b0c1``, ``s2b0proj``,
``fc``...). The stem sees only the image: every error-only rule gives it the exact local gradient, so
it is not searched unless a rule with its own update (a Hebbian plugin) is offered; then its choice
names the error-only candidate ``conv2d``. BatchNorm, ReLU, pooling and the residual adds stay exact, as in every rule.

Example:
    >>> from nni_bio.search_spaces.rule_per_layer import RulePerLayerSpace
    >>> len(RulePerLayerSpace(depth=8, width=4).simplify())  # 3 stages x 1 block x 2 convs + 2 projections + fc
    9
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nni_bio.core._registry import get_rule
from nni_bio.nas.mutables import ModelSpace, rule_choice
from nni_bio.search_spaces._genotype import GenotypeMixin

DEFAULT_RULES = ("backprop", "brsf", "fa", "frsf", "usf")


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, rules: list[str], label: str):
        super().__init__()
        conv = dict(kernel_size=3, padding=1, bias=False)
        self.conv1 = rule_choice("conv2d", rules=rules, label=f"{label}c1", in_channels=c_in, out_channels=c_out,
                                 stride=stride, **conv)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = rule_choice("conv2d", rules=rules, label=f"{label}c2", in_channels=c_out, out_channels=c_out, **conv)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                rule_choice("conv2d", rules=rules, label=f"{label}proj", in_channels=c_in, out_channels=c_out,
                            kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class RulePerLayerSpace(GenotypeMixin, ModelSpace):
    """ResNet-(6n+2) whose every conv/linear layer picks its learning rule."""

    space_name = "rule_per_layer"

    def __init__(self, in_channels: int = 3, num_classes: int = 10, depth: int = 20, width: int = 16,
                 rules: Sequence[str] = DEFAULT_RULES):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 (8, 14, 20, 32, 56, ...), got {depth}")
        n, rules = (depth - 2) // 6, list(rules)
        self.stem = rule_choice("conv2d", rules=rules, label="stem", in_channels=in_channels, out_channels=width,
                                kernel_size=3, padding=1, bias=False, input_layer=True)
        self.bn = nn.BatchNorm2d(width)
        blocks, c_in = [], width
        for stage in range(3):
            c_out = width * 2**stage
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(_Block(c_in, c_out, stride, rules, label=f"s{stage + 1}b{b}"))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = rule_choice("linear", rules=rules, label="fc", in_features=c_in, out_features=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(torch.relu(self.bn(self.stem(x))))
        return self.fc(x.mean((2, 3)))
