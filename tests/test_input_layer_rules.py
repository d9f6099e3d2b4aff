"""The first weight layer's rule cannot change training with error-only rules, so no space searches it."""

import copy

import pytest
import torch
from torch import nn

import nni_bio
from nni_bio.nas.candidates import input_layer_rules
from nni_bio.nas.mutables import search_space_json
from nni_bio.search_spaces.rule_per_layer import RulePerLayerSpace
from nni_bio.search_spaces.tiny import TinySpace
from nni_bio.train.training import wire_rules

BIO = ["brsf", "dfa", "fa", "frsf", "kp", "usf"]


def test_error_only_rules_collapse_to_one_bio_representative():
    assert input_layer_rules(BIO) == ["brsf"]
    assert input_layer_rules(["backprop", "usf"]) == ["usf"]
    assert input_layer_rules(["backprop"]) == ["backprop"]


def test_a_rule_with_its_own_update_stays_searchable():
    pytest.importorskip("nni_bio_hebbian")
    assert input_layer_rules(["usf", "fa", "softhebb"]) == ["fa", "softhebb"]


@pytest.mark.parametrize("first", ["backprop", "dfa", "fa", "kp", "usf", "brsf"])
def test_first_layer_rule_leaves_training_unchanged(first):
    """The claim behind the collapse: train the same net with another rule in layer 1 only."""
    torch.manual_seed(0)
    ref = nn.Sequential(nni_bio.get_rule("brsf").conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nni_bio.get_rule("fa").conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nni_bio.get_rule("dfa").linear(4 * 36, 3))
    other = nni_bio.swap_rule(copy.deepcopy(ref), {"0": first})
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    for net in (ref, other):
        wire_rules(net)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    trained = dict(other.named_parameters())
    for name, a in ref.named_parameters():
        if not name.startswith("0.feedback"):
            torch.testing.assert_close(a, trained[name], msg=name)


@pytest.mark.parametrize("space", [
    TinySpace(rules=BIO, width=4), TinySpace(rules=BIO, width=4, kind="mlp"),
    RulePerLayerSpace(depth=8, width=4, rules=BIO)])
def test_no_space_searches_the_rule_of_its_first_layer(space):
    labels = search_space_json(space)
    assert "stem" not in labels and "fc1" not in labels
    if "conv1" in labels:
        assert labels["conv1"]["_value"] == ["conv_3x3@brsf", "conv_5x5@brsf"]
