"""Small spaces for digits and Fashion-MNIST that a laptop CPU searches in minutes.

``kind="cnn"`` (default): two searchable conv slots (op x rule) and a searchable classifier rule::

    conv1: {conv_3x3, conv_5x5} x input rules    -> BN -> ReLU
    conv2: {conv_3x3, sep_conv_3x3} x rules, skip -> BN -> ReLU -> 2x2 average pool
    fc:    rules

``kind="mlp"``: two hidden layers and the output layer, each with a searchable rule, and a
searchable activation.

The first weight layer (``conv1``, ``fc1``) is built with ``input_layer=True``: every error-only rule
trains it identically (its input is the image), so they collapse into one candidate per op, named by
the op alone (``conv_3x3``), and ``fc1`` is searched only when a rule with its own update is offered.

Example:
    >>> from nni_bio.search_spaces.tiny import TinySpace
    >>> space = TinySpace(rules=["usf", "fa"])
    >>> sorted(space.simplify())
    ['conv1', 'conv2', 'fc']
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nni_bio.core._registry import get_rule
from nni_bio.nas.mutables import LayerChoice, ModelSpace, op_rule_choice, rule_choice
from nni_bio.search_spaces._genotype import GenotypeMixin

DEFAULT_RULES = ("backprop", "fa", "frsf", "usf")


def _conv(c_in: int, c_out: int, k: int):
    return lambda rule: get_rule(rule).conv2d(c_in, c_out, k, padding=k // 2, bias=False)


def _sep_conv(c: int, k: int):
    def build(rule: str) -> nn.Module:
        r = get_rule(rule)
        return nn.Sequential(r.conv2d(c, c, k, padding=k // 2, groups=c, bias=False), r.conv2d(c, c, 1, bias=False))
    return build


class TinySpace(GenotypeMixin, ModelSpace):
    """A small CNN (or MLP) whose ops and learning rules are searched."""

    space_name = "tiny"

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 8, width: int = 16,
                 rules: Sequence[str] = DEFAULT_RULES, kind: str = "cnn"):
        super().__init__()
        rules = list(rules)
        self.kind = kind
        if kind == "cnn":
            self.conv1 = op_rule_choice({"conv_3x3": _conv(in_channels, width, 3), "conv_5x5": _conv(in_channels, width, 5)},
                                        rules=rules, label="conv1", input_layer=True)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = op_rule_choice({"conv_3x3": _conv(width, width, 3), "sep_conv_3x3": _sep_conv(width, 3),
                                         "skip_connect": lambda rule: nn.Identity()},
                                        rules=rules, label="conv2", parameter_free=["skip_connect"])
            self.bn2 = nn.BatchNorm2d(width)
            pooled = (image_size // 2) ** 2
            self.fc = rule_choice("linear", rules=rules, label="fc", in_features=width * pooled, out_features=num_classes)
        elif kind == "mlp":
            features = in_channels * image_size * image_size
            self.fc1 = rule_choice("linear", rules=rules, label="fc1", in_features=features, out_features=width * 4,
                                   input_layer=True)
            self.act = LayerChoice({"relu": nn.ReLU(), "tanh": nn.Tanh()}, label="activation")
            self.fc2 = rule_choice("linear", rules=rules, label="fc2", in_features=width * 4, out_features=width * 4)
            self.fc = rule_choice("linear", rules=rules, label="fc", in_features=width * 4, out_features=num_classes)
        else:
            raise ValueError(f"kind must be 'cnn' or 'mlp', not {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "mlp":
            x = self.act(self.fc1(x.flatten(1)))
            return self.fc(self.act(self.fc2(x)))
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.nn.functional.avg_pool2d(x, 2).flatten(1))
