"""The fixed ResNet skeleton with a rule per layer."""

import pytest
import torch

from nni_bio.core.swap import rule_map
from nni_bio.nas.mutables import search_space_json
from nni_bio.search_spaces.rule_per_layer import RulePerLayerSpace
from test_space_tiny import one_step


def test_every_conv_but_the_stem_and_the_classifier_have_a_rule_choice():
    labels = search_space_json(RulePerLayerSpace(depth=8, width=4, rules=["usf", "fa"]))
    assert sorted(labels) == sorted(["fc", "s1b0c1", "s1b0c2", "s2b0c1", "s2b0c2", "s2b0proj",
                                     "s3b0c1", "s3b0c2", "s3b0proj"])
    assert all(v["_value"] == ["fa", "usf"] for v in labels.values())


def test_resnet20_has_the_expected_depth():
    assert len(search_space_json(RulePerLayerSpace(depth=20, width=4))) == 18 + 2 + 1


def test_bad_depth_is_refused():
    with pytest.raises(ValueError, match="6n\\+2"):
        RulePerLayerSpace(depth=10)


@pytest.mark.parametrize("rule", ["backprop", "brsf", "dfa", "kp"])
def test_frozen_network_uses_the_sampled_rules_and_trains(rule):
    space_args = {"depth": 8, "width": 4, "rules": ["usf", rule]}
    labels = search_space_json(RulePerLayerSpace(**space_args))
    sample = {label: (rule if i % 2 else "usf") for i, label in enumerate(sorted(labels))}
    model = RulePerLayerSpace.build_network(RulePerLayerSpace.export_genotype(sample, space_args))
    rules = rule_map(model)
    assert set(rules.values()) == {"usf", rule} and len(rules) == len(labels) + 1  # + the unsearched stem
    one_step(model, channels=3, size=8)
