"""The integration layer: rule and op x rule choices as NNI LayerChoices."""

import pytest
import torch
from torch import nn

from nni_bio.core.errors import UnknownRuleError
from nni_bio.core.layers import RuleConv2d, RuleLinear
from nni_bio.nas.mutables import ModelSpace, freeze, op_rule_choice, rule_choice, search_space_json


class TwoLayerSpace(ModelSpace):
    def __init__(self, rules=("usf", "fa", "backprop")):
        super().__init__()
        self.conv = rule_choice("conv2d", rules=rules, label="conv", in_channels=1, out_channels=4,
                                kernel_size=3, padding=1, groups=1)
        self.head = op_rule_choice({"linear": lambda rule: nn.Sequential(nn.Flatten(), rule_linear(rule)),
                                    "pool": lambda rule: nn.Sequential(nn.Flatten(), nn.LazyLinear(3))},
                                   rules=rules, label="head", parameter_free=["pool"])

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)))


def rule_linear(rule):
    from nni_bio import get_rule

    return get_rule(rule).linear(4 * 4 * 4, 3)


def test_candidates_are_sorted_names_and_parameter_free_ops_appear_once():
    space = search_space_json(TwoLayerSpace())
    assert space["conv"] == {"_type": "choice", "_value": ["backprop", "fa", "usf"]}
    assert space["head"]["_value"] == ["linear@backprop", "linear@fa", "linear@usf", "pool"]


def test_candidate_order_does_not_depend_on_argument_order():
    assert search_space_json(TwoLayerSpace(rules=("fa", "usf"))) == search_space_json(TwoLayerSpace(rules=("usf", "fa")))


def test_freeze_gives_the_chosen_rules_and_trains():
    model = freeze(TwoLayerSpace(), {"conv": "fa", "head": "linear@usf"})
    assert isinstance(model.conv, RuleConv2d) and model.conv.rule_name == "fa"
    assert isinstance(model.head[1], RuleLinear) and model.head[1].rule_name == "usf"
    loss = nn.functional.cross_entropy(model(torch.randn(2, 1, 4, 4)), torch.tensor([0, 1]))
    loss.backward()
    assert model.conv.weight.grad is not None


def test_freeze_names_missing_labels():
    with pytest.raises(ValueError, match="head"):
        freeze(TwoLayerSpace(), {"conv": "fa"})


def test_unknown_rule_in_space_fails_early_with_suggestion():
    with pytest.raises(UnknownRuleError, match="usf"):
        TwoLayerSpace(rules=("usg",))


def test_space_reinstantiates_from_recorded_plain_arguments():
    space = TwoLayerSpace(rules=["usf", "fa"])
    assert space.trace_kwargs == {"rules": ["usf", "fa"]}
