"""The tiny digits space: every candidate trains, genotypes round-trip."""

import json

import pytest
import torch

from nni_bio.core.swap import rule_map
from nni_bio.nas.mutables import search_space_json
from nni_bio.search_spaces import get_space
from nni_bio.search_spaces.tiny import TinySpace
from nni_bio.train.training import wire_rules


def one_step(model, channels=1, size=8):
    wire_rules(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, channels, size, size)), torch.tensor([0, 1, 2, 3]))
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_every_candidate_trains_one_step(kind):
    rules = ["backprop", "dfa", "usf"]
    space = TinySpace(rules=rules, kind=kind, width=4)
    choices = search_space_json(space)
    for label, choice in choices.items():
        for candidate in choice["_value"]:
            sample = {k: v["_value"][0] for k, v in choices.items()} | {label: candidate}
            one_step(TinySpace.build_network(TinySpace.export_genotype(sample, {"rules": rules, "kind": kind, "width": 4})))


def test_genotype_round_trip_rebuilds_the_same_network():
    sample = {"conv1": "conv_5x5", "conv2": "sep_conv_3x3@frsf", "fc": "usf"}
    genotype = json.loads(json.dumps(TinySpace.export_genotype(sample, {"width": 4})))
    torch.manual_seed(0)
    a = TinySpace.build_network(genotype)
    torch.manual_seed(0)
    b = TinySpace.build_network(genotype)
    assert rule_map(a) == {"conv1": "fa", "conv2.0": "frsf", "conv2.1": "frsf", "fc": "usf"}
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(a.eval()(x), b.eval()(x))


def test_genotype_of_another_space_is_refused():
    with pytest.raises(ValueError, match="rule_per_layer"):
        TinySpace.build_network({"space": "rule_per_layer", "args": {}, "sample": {}})


def test_unknown_space_name_suggests():
    with pytest.raises(Exception, match="tiny"):
        get_space("tinny")
