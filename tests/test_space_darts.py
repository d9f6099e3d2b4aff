"""The DARTS op x rule space (search_spaces/darts.py) and its final network (search_spaces/darts_net.py)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nni_bio.core.layers import RuleLayer
from nni_bio.core.swap import rule_map
from nni_bio.nas.mutables import freeze, search_space_json
from nni_bio.nas.ops import FactorizedReduce
from nni_bio.search_spaces import get_space, space_class
from nni_bio.search_spaces.darts import (BIODARTS, DartsSpace, GenotypeError, bio_weight_split, build_network,
                                         export_genotype, sample_from_edge_weights)
from nni_bio.search_spaces.darts_cells import labels
from nni_bio.search_spaces.darts_net import DartsNetwork
from nni_bio.train.training import wire_rules

TINY = dict(width=4, num_cells=3)  # cells 1 and 2 are reduction cells


def _sample(space: DartsSpace, k: int) -> dict:
    """Candidate k (modulo the slot's list) on every op slot; input k modulo the node's inputs."""
    sample = {}
    for cell_type in ("normal", "reduce"):
        names = space.candidates(cell_type)
        for op_label, input_label in labels(space.space_args["num_nodes"], cell_type):
            node = int(op_label.rsplit("_", 2)[1])
            sample[op_label], sample[input_label] = names[k % len(names)], [k % node]
    return sample


def _sgd_step(net: nn.Module, in_channels: int = 3, size: int = 8) -> float:
    net = wire_rules(net.train())
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    out = net(torch.randn(4, in_channels, size, size))
    logits = out[0] if isinstance(out, tuple) else out
    loss = F.cross_entropy(logits, torch.tensor([0, 1, 2, 3]))
    if isinstance(out, tuple):
        loss = loss + 0.4 * F.cross_entropy(out[1], torch.tensor([0, 1, 2, 3]))
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    return loss.item()


def test_registered_and_plain_data_args() -> None:
    assert space_class("darts") is DartsSpace
    space = get_space("darts", rules=("fa", "usf"), **TINY)
    args = space.space_args
    assert json.loads(json.dumps(args)) == args
    assert args["rules"] == ["fa", "usf"] and args["fixed_rule"] == "usf" and args["reduce_skip_rules"] is False


def test_default_candidates_have_no_duplicates() -> None:
    space = DartsSpace(**TINY)
    normal, reduce = space.candidates("normal"), space.candidates("reduce")
    assert normal == reduce
    assert normal[:4] == ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"]
    assert len(normal) == 4 + 4 * 4 == len(set(normal))
    assert not [c for c in normal if c.startswith("skip_connect@")]
    rules = {c.split("@")[1] for c in normal if "@" in c}
    assert rules == {"usf", "brsf", "frsf", "fa"}


def test_search_space_json_lists_candidates() -> None:
    space = DartsSpace(rules=["usf", "fa"], reduce_skip_rules=True, **TINY)
    ssj = search_space_json(space)
    assert len(ssj) == 2 * 2 * 4 * 2  # cell types x (op, input) x nodes x ops per node
    assert ssj["normal/op_2_0"] == {"_type": "choice", "_value": space.candidates("normal")}
    assert ssj["reduce/op_5_1"]["_value"] == space.candidates("reduce")
    assert {"skip_connect@fa", "skip_connect@usf"} <= set(ssj["reduce/op_3_0"]["_value"])
    assert "skip_connect" not in ssj["reduce/op_3_0"]["_value"]
    assert ssj["normal/input_4_1"] == {"_type": "choice", "_value": [0, 1, 2, 3]}
    json.dumps(ssj)


def test_rules_without_grouped_convs_get_no_depthwise_candidates(fake_distribution) -> None:
    fake_distribution("flat-rule", rules={"flat": "flat_rule:Flat"}, modules={"flat_rule": '''
        from nni_bio.core.rule import LearningRule, RuleInfo
        from nni_bio.rules.usf import UniformSignFeedbackRule

        class Flat(UniformSignFeedbackRule):
            info = RuleInfo(name="flat", family="feedback", summary="usf without grouped convs",
                            supports_groups=False, api_version=1)
    '''})
    with pytest.warns(UserWarning, match="sep_conv_3x3@flat"):
        space = DartsSpace(rules=["flat", "usf"], **TINY)
    assert not [c for c in space.candidates("normal") if c.endswith("@flat")]
    with pytest.warns(UserWarning):
        reduce = DartsSpace(rules=["flat"], reduce_skip_rules=True, **TINY).candidates("reduce")
    assert "skip_connect@flat" in reduce and "sep_conv_3x3@usf" not in reduce


@pytest.mark.parametrize("reduce_skip_rules", [False, True])
def test_every_candidate_freezes_and_trains(reduce_skip_rules: bool) -> None:
    rules = ["brsf", "dfa", "fa", "frsf", "usf"] if reduce_skip_rules else ["dfa", "usf"]
    space = DartsSpace(in_channels=1, rules=rules, reduce_skip_rules=reduce_skip_rules, **TINY)
    count = max(len(space.candidates("normal")), len(space.candidates("reduce")))
    for k in range(count):
        sample = _sample(space, k)
        net = freeze(space, sample)
        assert isinstance(net, DartsNetwork)
        assert not [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        chosen = {sample[op] for op, _ in labels(4, "normal") + labels(4, "reduce")}
        used = set(rule_map(net).values())
        assert {c.split("@")[1] for c in chosen if "@" in c} <= used
        _sgd_step(net, in_channels=1)


def test_freeze_accepts_tuner_indices_and_matches_build_network() -> None:
    space = DartsSpace(rules=["brsf", "fa"], **TINY)
    sample = _sample(space, 5)
    tuner_sample = {k: (v[0] if isinstance(v, list) else v) for k, v in sample.items()}  # HPO tuners give ints
    torch.manual_seed(1)
    frozen = freeze(space, tuner_sample).eval()
    torch.manual_seed(1)
    built = build_network(export_genotype(sample, space.space_args), **TINY).eval()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(frozen(x), built(x))


def test_genotype_json_round_trip() -> None:
    space = DartsSpace(rules=["brsf", "fa", "frsf", "usf"], **TINY)
    torch.manual_seed(3)
    sample = {label: mutable.random() for label, mutable in space.simplify().items()}
    genotype = DartsSpace.export_genotype(sample, space.space_args)
    assert set(genotype) == {"space", "args", "sample", "normal", "normal_concat", "reduce", "reduce_concat"}
    loaded = json.loads(json.dumps(genotype))
    assert loaded == genotype
    assert len(genotype["normal"]) == 8 and genotype["normal_concat"] == [2, 3, 4, 5]
    assert all(isinstance(op, str) and isinstance(j, int) for op, j in genotype["reduce"])
    nets = []
    for g in (genotype, loaded):
        torch.manual_seed(0)
        nets.append(DartsSpace.build_network(g, **TINY))
    assert str(nets[0]) == str(nets[1]) and rule_map(nets[0]) == rule_map(nets[1])
    x = torch.randn(2, 3, 8, 8)
    for train in (False, True):
        outs = []
        for net in nets:
            net.train(train)
            torch.manual_seed(7)
            outs.append(net(x))
        assert torch.equal(*outs)
    # a genotype with only space, args and sample also builds
    assert str(build_network({k: genotype[k] for k in ("space", "args", "sample")}, **TINY)) == str(nets[0])


def test_export_genotype_rejects_bad_samples() -> None:
    space = DartsSpace(rules=["usf"], **TINY)
    sample = _sample(space, 4)
    with pytest.raises(GenotypeError, match="lacks"):
        export_genotype({k: v for k, v in sample.items() if k != "reduce/op_5_1"}, space.space_args)
    with pytest.raises(GenotypeError, match="not a candidate"):
        export_genotype({**sample, "normal/op_2_0": "sep_conv_3x3@fa"}, space.space_args)
    with pytest.raises(GenotypeError, match="out of range"):
        export_genotype({**sample, "normal/input_3_1": [3]}, space.space_args)
    with pytest.raises(GenotypeError, match="unknown DARTS space arguments"):
        export_genotype(sample, {"widht": 4})
    with pytest.raises(GenotypeError, match="space 'nb201'"):
        build_network({**BIODARTS, "space": "nb201"})


def test_skip_connect_at_stride_two_has_rule_layers() -> None:
    space = DartsSpace(rules=["fa", "usf"], fixed_rule="frsf", reduce_skip_rules=True, **TINY)
    sample = _sample(space, 0)
    sample.update({"normal/op_2_0": "skip_connect", "reduce/op_2_0": "skip_connect@fa",
                   "reduce/op_2_1": "skip_connect@usf", "reduce/input_2_1": [1]})
    net = freeze(space, sample)
    normal_cell, reduce_cell = net.cells[0], net.cells[1]
    assert isinstance(normal_cell.ops[0], nn.Identity)
    fr_fa, fr_usf = reduce_cell.ops[0], reduce_cell.ops[1]
    assert isinstance(fr_fa, FactorizedReduce) and isinstance(fr_usf, FactorizedReduce)
    assert {m.rule_name for m in fr_fa.modules() if isinstance(m, RuleLayer)} == {"fa"}
    assert {m.rule_name for m in fr_usf.modules() if isinstance(m, RuleLayer)} == {"usf"}
    # without reduce_skip_rules the one skip_connect candidate uses fixed_rule at stride 2
    plain = build_network({"args": {**space.space_args, "reduce_skip_rules": False},
                           "sample": {**sample, "reduce/op_2_0": "skip_connect", "reduce/op_2_1": "skip_connect"}},
                          **TINY)
    assert {m.rule_name for m in plain.cells[1].ops[0].modules() if isinstance(m, RuleLayer)} == {"frsf"}
    assert bio_weight_split(net)["backprop"] == 0


def test_no_backprop_weights_with_a_bio_fixed_rule() -> None:
    genotype = export_genotype(_sample(DartsSpace(rules=["usf"], **TINY), 6), {"rules": ["usf"]})
    split = bio_weight_split(build_network(genotype, auxiliary=True, **TINY))
    assert split["backprop"] == 0 and split["plain_layers"] == [] and split["bio_fraction"] == 1.0
    assert split["bio"] > 0 and split["total"] == split["bio"] + split["other"]
    bp = export_genotype(genotype["sample"], {"rules": ["usf"], "fixed_rule": "backprop"})
    split_bp = bio_weight_split(build_network(bp, **TINY))
    assert split_bp["backprop"] > 0 and set(split_bp["per_rule"]) == {"backprop", "usf"}


def test_biodarts_builds_trains_and_matches_the_reference_size() -> None:
    assert json.loads(json.dumps(BIODARTS)) == BIODARTS
    assert BIODARTS["args"]["reduce_skip_rules"] is True
    assert BIODARTS["normal"][2] == ["sep_conv_3x3@frsf", 1] and BIODARTS["reduce"][1] == ["skip_connect@usf", 1]
    net = freeze(DartsSpace(reduce_skip_rules=True, **TINY), BIODARTS["sample"])  # BIODARTS is in the space
    assert set(rule_map(net).values()) == {"usf", "frsf"}
    for size in (16, 32):  # 32 px: DARTS' 5x5/3 aux pool at 8x8; 16 px: adaptive pool
        net = build_network(BIODARTS, width=4, num_cells=6, auxiliary=True)
        out = net(torch.randn(4, 3, size, size))
        assert isinstance(out, tuple) and out[0].shape == out[1].shape == (4, 10)
        _sgd_step(net, size=size)
        assert net.eval()(torch.randn(2, 3, size, size)).shape == (2, 10)
    # reference: BIODARTS at C=36, 20 cells has 2.87 M trainable parameters (paper-digest §5)
    full = bio_weight_split(build_network(BIODARTS))
    assert full["total"] == pytest.approx(2.87e6, rel=0.01) and full["backprop"] == 0


def test_drop_path_prob_is_used() -> None:
    net = build_network(BIODARTS, width=4, num_cells=3, drop_path_prob=0.0).train()
    x = torch.randn(8, 3, 8, 8)

    def run(p: float, train: bool = True) -> torch.Tensor:
        net.drop_path_prob = p
        net.train(train)
        torch.manual_seed(11)
        return net(x)

    assert torch.equal(run(0.0), run(0.0))
    assert not torch.allclose(run(0.0), run(0.5))
    assert torch.equal(run(0.0, train=False), run(0.5, train=False))


def test_sample_from_edge_weights_follows_the_darts_rule() -> None:
    weights = {}
    for cell_type in ("normal", "reduce"):
        for i in range(2, 6):
            for j in range(i):
                weights[f"{cell_type}/{i}_{j}"] = {"none": 0.9, "max_pool_3x3": 0.02 * j, "sep_conv_3x3@usf": 0.05}
    weights["normal/4_0"]["max_pool_3x3"] = 0.5
    sample = sample_from_edge_weights(weights)
    assert "none" not in sample.values()
    # node 4 keeps edge 0 (max_pool 0.5) and edge 3 (max_pool 0.06); edges 1, 2 peak at 0.05
    assert (sample["normal/op_4_0"], sample["normal/input_4_0"]) == ("max_pool_3x3", [0])
    assert (sample["normal/op_4_1"], sample["normal/input_4_1"]) == ("max_pool_3x3", [3])
    assert (sample["normal/op_2_0"], sample["normal/input_2_0"]) == ("sep_conv_3x3@usf", [0])
    assert sample["reduce/input_5_0"] == [3] and sample["reduce/input_5_1"] == [4]
    export_genotype(sample, {"rules": ["usf"]})


class RandomImages(torch.utils.data.Dataset):
    """Random images built inside the dataset (what nni.trace serializes is only the arguments)."""

    def __init__(self, n: int = 32, channels: int = 3, size: int = 8, num_classes: int = 10, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, channels, size, size, generator=g)
        self.y = torch.randint(0, num_classes, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


def one_shot_experiment(space, strategy, tmp_path):
    """An in-process one-shot NNI experiment on a tiny random dataset (nni-notes §5.5)."""
    import nni
    from nni.nas.evaluator.pytorch import Classification, DataLoader
    from nni.nas.experiment import NasExperiment

    train = DataLoader(nni.trace(RandomImages)(n=16), batch_size=16, shuffle=True)
    val = DataLoader(nni.trace(RandomImages)(n=8, seed=1), batch_size=8)
    evaluator = Classification(criterion=nn.CrossEntropyLoss, learning_rate=1e-2, num_classes=10,
                               train_dataloaders=train, val_dataloaders=val, max_epochs=1, accelerator="cpu",
                               enable_progress_bar=False, logger=False, enable_checkpointing=False,
                               enable_model_summary=False)
    experiment = NasExperiment(space, evaluator, strategy)
    experiment.config.experiment_working_directory = str(tmp_path)
    try:
        experiment.run()
    finally:
        experiment.stop()  # else NNI stops it at exit, logging into pytest's closed capture streams
    return experiment


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*")
@pytest.mark.parametrize("name", ["DARTS", "GumbelDARTS", "ENAS"])
def test_one_shot_strategy_epoch(name: str, tmp_path) -> None:
    from nni.nas import strategy

    strategies = {"DARTS": strategy.DARTS, "GumbelDARTS": strategy.GumbelDARTS,
                  "ENAS": lambda: strategy.ENAS(reward_metric_name="val_acc")}
    space = DartsSpace(rules=["fa", "usf"], num_nodes=3, **TINY)  # 3 nodes: 9 edges per cell, not 14
    search = strategies[name]()
    experiment = one_shot_experiment(space, search, tmp_path)
    sample = experiment.export_top_models(formatter="dict")[0]
    genotype = DartsSpace.export_genotype(sample, space.space_args)
    if name != "ENAS":
        derived = sample_from_edge_weights(search.oneshot_module.export_probs(), num_nodes=3)
        assert "none" not in derived.values()
        genotype = DartsSpace.export_genotype(derived, space.space_args)
    assert build_network(json.loads(json.dumps(genotype)), **TINY)(torch.randn(2, 3, 8, 8)).shape == (2, 10)


@pytest.mark.slow
def test_multi_trial_random_search(random_search) -> None:
    """NNI re-instantiates the space in a fixed-architecture context (simplified format): the trial
    model wraps the same pure network freeze() gives."""
    space = DartsSpace(rules=["dfa", "usf"], **TINY)
    experiment, seen = random_search(space, _sgd_step)
    assert len(seen) == 2 and all(isinstance(m.network, DartsNetwork) for m in seen)
    DartsSpace.export_genotype(experiment.export_top_models(formatter="dict")[0], space.space_args)
