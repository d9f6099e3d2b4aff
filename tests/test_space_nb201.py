"""The NAS-Bench-201 op x rule space (search_spaces/nb201.py) and its network (search_spaces/nb201_net.py)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nni_bio.core.layers import RuleLayer
from nni_bio.core.swap import rule_map
from nni_bio.nas.mutables import freeze, search_space_json
from nni_bio.nas.ops import ResNetBasicBlock
from nni_bio.search_spaces import get_space, space_class
from nni_bio.search_spaces.nb201 import (GenotypeError, NB201Space, arch_string, bio_weight_split, build_network,
                                         export_genotype, sample_from_arch)
from nni_bio.search_spaces.nb201_net import EDGES, NB201Network, edge_label
from nni_bio.train.training import wire_rules

TINY = dict(width=4, cells_per_stage=1)
ARCH = "|nor_conv_3x3@usf~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1@fa~1|nor_conv_3x3@fa~2|"


def _sgd_step(net: nn.Module, in_channels: int = 3) -> float:
    net = wire_rules(net.train())
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loss = F.cross_entropy(net(torch.randn(4, in_channels, 8, 8)), torch.tensor([0, 1, 2, 3]))
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    return loss.item()


def test_registered_and_candidates() -> None:
    assert space_class("nb201") is NB201Space
    space = get_space("nb201", rules=("usf", "fa"), **TINY)
    assert space.candidates() == ["none", "skip_connect", "nor_conv_1x1@fa", "nor_conv_1x1@usf",
                                  "nor_conv_3x3@fa", "nor_conv_3x3@usf", "avg_pool_3x3"]
    assert json.loads(json.dumps(space.space_args)) == space.space_args
    assert len(NB201Space(**TINY).candidates()) == 3 + 2 * 4  # default rules usf, brsf, frsf, fa


def test_search_space_json_shares_edge_labels_across_cells() -> None:
    space = NB201Space(rules=["usf", "fa"], width=4, cells_per_stage=2)  # 6 cells, one set of labels
    ssj = search_space_json(space)
    assert sorted(ssj) == sorted(edge_label(j, i) for j, i in EDGES)
    assert all(v == {"_type": "choice", "_value": space.candidates()} for v in ssj.values())


def test_every_candidate_freezes_and_trains() -> None:
    space = NB201Space(in_channels=1, rules=["brsf", "dfa", "fa", "frsf", "usf"], **TINY)
    names = space.candidates()
    for k, name in enumerate(names):
        # candidate k on every edge, and a mix (k, k+1, ...) so ops meet each other
        for sample in ({edge_label(j, i): name for j, i in EDGES},
                       {edge_label(j, i): names[(k + e) % len(names)] for e, (j, i) in enumerate(EDGES)}):
            net = freeze(space, sample)
            assert isinstance(net, NB201Network)
            assert not [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
            if "@" in name:
                assert name.split("@")[1] in set(rule_map(net).values())
            _sgd_step(net, in_channels=1)


def test_arch_string_round_trip() -> None:
    sample = sample_from_arch(ARCH)
    assert sample["cell/0_1"] == "nor_conv_3x3@usf" and sample["cell/2_3"] == "nor_conv_3x3@fa"
    assert arch_string(sample) == ARCH
    for bad in ("|none~0|", "|none~0|+|none~0|+|none~0|none~1|none~2|", "|none~1|+|none~0|none~1|+|a~0|b~1|c~2|"):
        with pytest.raises(GenotypeError):
            sample_from_arch(bad)


def test_genotype_json_round_trip() -> None:
    space = NB201Space(rules=["brsf", "fa", "usf"], **TINY)
    torch.manual_seed(2)
    sample = {label: mutable.random() for label, mutable in space.simplify().items()}
    genotype = NB201Space.export_genotype(sample, space.space_args)
    assert set(genotype) == {"space", "args", "sample", "arch"} and genotype["space"] == "nb201"
    assert genotype["arch"] == arch_string(sample)
    loaded = json.loads(json.dumps(genotype))
    assert loaded == genotype
    nets = []
    for g in (genotype, loaded, {"space": "nb201", "args": genotype["args"], "arch": genotype["arch"]}):
        torch.manual_seed(0)
        nets.append(NB201Space.build_network(g))
    x = torch.randn(2, 3, 8, 8)
    for net in nets[1:]:
        assert str(net) == str(nets[0]) and rule_map(net) == rule_map(nets[0])
    for train in (False, True):
        outs = []
        for net in nets:
            net.train(train)
            torch.manual_seed(5)
            outs.append(net(x))
        assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    # freeze() builds the same network as build_network()
    torch.manual_seed(0)
    frozen = freeze(space, sample).eval()
    torch.manual_seed(0)
    assert torch.equal(frozen(x), NB201Space.build_network(genotype).eval()(x))


def test_build_network_options() -> None:
    genotype = export_genotype(sample_from_arch(ARCH), {"rules": ["usf", "fa"], **TINY})
    net = build_network(genotype, width=6, cells_per_stage=2, num_classes=5, in_channels=1)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 5)
    assert len(net.cells) == 3 * 2 + 2 and net.classifier.in_features == 24
    with pytest.raises(GenotypeError, match="not a candidate"):
        export_genotype({**sample_from_arch(ARCH), "cell/0_1": "nor_conv_3x3@brsf"}, {"rules": ["usf", "fa"]})
    with pytest.raises(GenotypeError, match="lacks"):
        export_genotype({"cell/0_1": "none"}, {})
    with pytest.raises(GenotypeError, match="space 'darts'"):
        build_network({**genotype, "space": "darts"})


def test_reduction_blocks_use_the_fixed_rule_and_no_backprop() -> None:
    genotype = export_genotype(sample_from_arch(ARCH), {"rules": ["usf", "fa"], "fixed_rule": "frsf"})
    net = build_network(genotype, **TINY)
    blocks = [m for m in net.cells if isinstance(m, ResNetBasicBlock)]
    assert len(blocks) == 2
    for block in blocks:
        assert {m.rule_name for m in block.modules() if isinstance(m, RuleLayer)} == {"frsf"}
    assert rule_map(net)["stem.0"] == "frsf" and rule_map(net)["classifier"] == "frsf"
    split = bio_weight_split(net)
    assert split["backprop"] == 0 and split["plain_layers"] == [] and set(split["per_rule"]) == {"frsf", "usf", "fa"}
    bp = bio_weight_split(build_network({**genotype, "args": {**genotype["args"], "fixed_rule": "backprop"}}, **TINY))
    assert bp["backprop"] > 0


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*")
def test_one_shot_darts_epoch(tmp_path) -> None:
    from nni.nas.strategy import DARTS
    from test_space_darts import one_shot_experiment

    space = NB201Space(rules=["fa", "usf"], **TINY)
    experiment = one_shot_experiment(space, DARTS(), tmp_path)
    genotype = NB201Space.export_genotype(experiment.export_top_models(formatter="dict")[0], space.space_args)
    assert build_network(json.loads(json.dumps(genotype)))(torch.randn(2, 3, 8, 8)).shape == (2, 10)


@pytest.mark.slow
def test_multi_trial_random_search(random_search) -> None:
    space = NB201Space(rules=["dfa", "usf"], **TINY)
    _, seen = random_search(space, _sgd_step)
    assert len(seen) == 2 and all(isinstance(m.network, NB201Network) for m in seen)
