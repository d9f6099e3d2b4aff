"""The first weight layer's rule cannot change training with error-only rules, so no space searches it."""

import copy

import pytest
import torch
from torch import nn

import nni_bio
from nni_bio.nas.candidates import describe_candidate, input_layer_rules
from nni_bio.nas.mutables import FirstLayerNote, InvalidSampleError, freeze, input_layer_labels, search_space_json
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
        assert labels["conv1"]["_value"] == ["conv_3x3", "conv_5x5"]  # named by the op alone


def test_a_first_layer_slot_with_a_rule_of_its_own_names_the_error_only_candidate_by_kind():
    pytest.importorskip("nni_bio_hebbian")
    space = RulePerLayerSpace(depth=8, width=4, rules=["usf", "fa", "softhebb"])
    assert search_space_json(space)["stem"]["_value"] == ["conv2d", "softhebb"]
    assert input_layer_labels(space) == {"stem"}
    tiny = TinySpace(rules=["usf", "softhebb"], width=4)
    assert sorted(search_space_json(tiny)["conv1"]["_value"]) == ["conv_3x3", "conv_3x3@softhebb", "conv_5x5",
                                                                  "conv_5x5@softhebb"]


@pytest.mark.parametrize("given, read_as", [("conv_3x3@fa", "conv_3x3"), ("conv_5x5@dfa", "conv_5x5"),
                                            ("conv_3x3@backprop", "conv_3x3"), ("conv_3x3", "conv_3x3")])
def test_a_sample_naming_any_error_only_rule_in_the_first_layer_is_read_as_the_op_alone(given, read_as, recwarn):
    space = TinySpace(rules=BIO, width=4)
    sample = {"conv1": given, "conv2": "conv_3x3@usf", "fc": "fa"}
    net = freeze(space, sample)
    expected = freeze(TinySpace(rules=BIO, width=4), {**sample, "conv1": read_as})
    assert [type(m).__name__ for m in net.modules()] == [type(m).__name__ for m in expected.modules()]
    notes = [w for w in recwarn if issubclass(w.category, FirstLayerNote)]
    if given == read_as:
        assert not notes
    else:
        assert len(notes) == 1 and f"{given!r} is read as {read_as!r}" in str(notes[0].message)
        assert "exact local gradient" in str(notes[0].message)


def test_an_error_only_rule_is_not_read_into_a_slot_that_is_not_the_first_layer():
    space = TinySpace(rules=BIO, width=4)
    with pytest.raises(InvalidSampleError, match="slot 'conv2'.*its candidates: "):
        freeze(space, {"conv1": "conv_3x3", "conv2": "conv_3x3", "fc": "fa"})


def test_an_unknown_op_in_the_first_layer_gets_one_line_with_its_candidates():
    space = TinySpace(rules=BIO, width=4)
    with pytest.raises(InvalidSampleError, match=r"slot 'conv1': 'conv_7x7@fa' is not offered.*conv_3x3, conv_5x5$"):
        freeze(space, {"conv1": "conv_7x7@fa", "conv2": "conv_3x3@usf", "fc": "fa"})


def test_the_printed_architecture_says_exact_local_gradient():
    assert describe_candidate("conv_3x3", input_layer=True) == "conv_3x3 @ exact local gradient"
    assert describe_candidate("conv2d", input_layer=True) == "conv2d @ exact local gradient"
    assert describe_candidate("skip_connect") == "skip_connect"
    assert describe_candidate("conv_3x3@softhebb", input_layer=True) == "conv_3x3 @ softhebb"
