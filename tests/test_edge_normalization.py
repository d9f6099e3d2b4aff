"""PC-DARTS' edge normalization (issue 11 item 5): a learned architecture weight beta per incoming edge
of every cell node, ``node_i = sum_j softmax(beta_i)_j * edge_ij(x_j)``; derivation by
``softmax(beta_i)_j * best op weight of edge ij``.

Sizes: DARTS space, width 4, 3 cells, 2 nodes per cell, one rule, 8x8 digits, 32-64 training images."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from nni_bio.data import get_dataset
from nni_bio.search_spaces import space_arguments, space_class
from nni_bio.search_spaces.tiny import TinySpace
from nni_bio.strategies.oneshot import make_strategy, run_oneshot
from nni_bio.strategies.oneshot.loop import _run_settings
from nni_bio.strategies.oneshot.search import OneShotConfig, Search
from nni_bio.strategies.supernet import ZERO_OP, PartialChannelMixedCell, build_supernet
from nni_bio.train.checkpoint import load_checkpoint

SMALL = {"width": 4, "num_cells": 3, "num_nodes": 2, "rules": ["usf"]}
FAST = {"train_limit": 32, "batch_size": 16}


def darts_space(**overrides):
    cls = space_class("darts")
    return cls(**space_arguments(cls, {**SMALL, **overrides}, "digits"))


def cells(supernet) -> list[PartialChannelMixedCell]:
    return [m for m in supernet.choices if isinstance(m, PartialChannelMixedCell)]


def betas(supernet) -> dict[str, torch.Tensor]:
    return {key: beta for cell in cells(supernet) for key, beta in cell._arch_beta.items()}


def cell_io(supernet, cell, x: torch.Tensor):
    """The inputs ``[s0, s1]`` and the output of ``cell`` in one forward pass of the supernet on ``x``."""
    seen = {}
    handles = [cell.register_forward_pre_hook(lambda m, args: seen.setdefault("inputs", args[0])),
               cell.register_forward_hook(lambda m, args, out: seen.setdefault("output", out))]
    try:
        supernet.model(x)
    finally:
        for h in handles:
            h.remove()
    return seen["inputs"], seen["output"]


def digits(n: int = 32):
    return torch.utils.data.Subset(get_dataset("digits", "train"), range(n))


def test_beta_is_one_shared_architecture_logit_per_node_input_never_a_weight() -> None:
    torch.manual_seed(0)
    plain = build_supernet(darts_space(), "mixture")
    torch.manual_seed(0)
    supernet = build_supernet(darts_space(), "mixture", edge_normalization=True)
    assert len(cells(supernet)) == 3 and all(c.partial_channels == 1 for c in cells(supernet))
    found = betas(supernet)
    assert {k: tuple(v.shape) for k, v in found.items()} == {
        "normal/2": (2,), "normal/3": (3,), "reduce/2": (2,), "reduce/3": (3,)}
    reduce = [c for c in cells(supernet) if c.label == "reduce"]  # cells 1 and 2 of 3
    assert len(reduce) == 2 and reduce[0]._arch_beta["reduce/3"] is reduce[1]._arch_beta["reduce/3"]
    arch_ids = {id(p) for p in supernet.arch_parameters()}
    assert all(id(beta) in arch_ids for beta in found.values())
    assert not arch_ids & {id(p) for p in supernet.weights}
    assert len(supernet.weights) == len(plain.weights)  # the weights are those of the plain supernet
    assert supernet.alpha_vector().numel() == plain.alpha_vector().numel() + 2 * (2 + 3)
    search = Search(supernet, OneShotConfig(batch_size=16), digits(), digits(), digits())
    optimised = {id(p) for group in search.optimizer.param_groups for p in group["params"]}
    assert not optimised & arch_ids
    assert any("_arch_beta" in name for name in supernet.arch)  # saved with the model's state
    assert sum("_arch_beta" in key for key in supernet.model.state_dict()) >= 4


def test_uniform_beta_averages_each_node_over_its_inputs_by_hand() -> None:
    torch.manual_seed(0)
    supernet = build_supernet(darts_space(), "mixture", edge_normalization=True)
    with torch.no_grad():
        for beta in betas(supernet).values():
            beta.zero_()
        for cell in cells(supernet):  # distinct op weights, so the op mixture matters too
            for alpha in cell._arch_alpha.values():
                alpha.copy_(torch.randn(alpha.shape))
    cell = cells(supernet)[0]
    supernet.model.eval()
    with torch.no_grad():
        (s0, s1), output = cell_io(supernet, cell, torch.randn(2, 1, 8, 8))
        states = list(cell.preprocessor([s0, s1]))
        for i, ops in enumerate(cell.ops, start=2):
            node = 0
            for j in range(i):
                w = torch.softmax(cell._arch_alpha[f"{cell.label}/{i}_{j}"], -1)
                assert len(w) == len(ops[j])  # the DARTS space has none: no implicit zero op
                edge = sum(w[k] * op(states[j]) for k, op in enumerate(ops[j].values()))
                node = node + edge / i  # PC-DARTS: softmax(beta)_j = 1/i for beta = 0
            states.append(node)
        expected = cell.postprocessor(torch.cat(states[2:], 1), [s0, s1])
    torch.testing.assert_close(output, expected)


def test_beta_on_one_input_makes_the_node_that_edge() -> None:
    torch.manual_seed(0)
    normalized = build_supernet(darts_space(), "mixture", edge_normalization=True)
    cell = cells(normalized)[0]
    with torch.no_grad():
        for key, beta in cell._arch_beta.items():
            beta.fill_(-1e4)
            beta[0] = 0.0  # every node reads input 0 only
    normalized.model.eval()
    with torch.no_grad():
        x, out = cell_io(normalized, cell, torch.randn(2, 1, 8, 8))
        states = list(cell.preprocessor(x))
        w = torch.softmax(cell._arch_alpha[f"{cell.label}/2_0"], -1)
        node2 = sum(w[k] * op(states[0]) for k, op in enumerate(cell.ops[0][0].values()))
    this_cell = out[1]  # the DARTS space's cells return (previous output, own output)
    torch.testing.assert_close(this_cell[:, :node2.size(1)], node2)  # node 2 is the first of the concatenation


@pytest.mark.parametrize("k", [1, 2])
def test_gradients_reach_beta(k: int) -> None:
    torch.manual_seed(0)
    supernet = build_supernet(darts_space(width=8), "mixture", partial_channels=k, edge_normalization=True)
    F.cross_entropy(supernet.model(torch.randn(4, 1, 8, 8)), torch.tensor([1, 2, 3, 4])).backward()
    for key, beta in betas(supernet).items():
        assert beta.grad is not None and beta.grad.abs().sum() > 0, key


def test_darts_trains_beta_with_the_architecture_adam_and_the_weight_step_leaves_it() -> None:
    torch.manual_seed(0)
    supernet = build_supernet(darts_space(), "mixture", edge_normalization=True)
    searcher, config = make_strategy("darts", arch_lr=0.1, batch_size=16)
    search = Search(supernet, config, digits(), digits(), digits())
    searcher.setup(search)
    adam = {id(p) for group in searcher.arch_optimizer.param_groups for p in group["params"]}
    assert all(id(beta) in adam for beta in betas(supernet).values())
    before = {k: v.detach().clone() for k, v in betas(supernet).items()}
    x, y = search.next_arch_batch()
    search.weight_step(x, y)
    assert all(torch.equal(before[k], v) for k, v in betas(supernet).items())
    searcher.arch_step(x, y, *search.next_arch_batch())
    assert all(not torch.equal(before[k], v) for k, v in betas(supernet).items())


def _strength_order(probs, label: str, node: int) -> list[int]:
    """PC-DARTS' ranking of node ``node``'s inputs, from ``probs`` by hand."""
    def strength(j):
        best = max(p for op, p in probs[f"{label}/{node}_{j}"].items() if op != ZERO_OP)
        return probs[f"{label}/{node}"][j] * best
    return sorted(range(node), key=lambda j: -strength(j))


def test_derivation_ranks_inputs_by_edge_weight_times_best_op_weight() -> None:
    torch.manual_seed(0)
    supernet = build_supernet(darts_space(), "mixture", edge_normalization=True)
    cell = next(c for c in cells(supernet) if c.label == "normal")
    ops = cell.op_names
    best_op = {0: "sep_conv_3x3@usf", 1: "max_pool_3x3", 2: "skip_connect"}
    assert all(op in ops for op in best_op.values())
    with torch.no_grad():
        for j, logit in zip(range(3), (4.0, 3.0, 1.0)):  # best op weights: input 0 > input 1 > input 2
            alpha = cell._arch_alpha[f"normal/3_{j}"]
            alpha.zero_()
            alpha[ops.index(best_op[j])] = logit
            alpha[ops.index(ZERO_OP)] = logit + 2  # never chosen, whatever it weighs
        for beta in betas(supernet).values():
            beta.zero_()
    sample = supernet.derive()
    assert sorted(sample[f"normal/input_3_{k}"][0] for k in range(2)) == [0, 1]  # uniform beta: DARTS' rule
    with torch.no_grad():
        cell._arch_beta["normal/3"].copy_(torch.tensor([-5.0, 0.0, 5.0]))  # PC-DARTS' edge weights flip input 0
    sample = supernet.derive()
    chosen = {sample[f"normal/input_3_{k}"][0]: sample[f"normal/op_3_{k}"] for k in range(2)}
    assert chosen == {1: best_op[1], 2: best_op[2]}  # the op per edge is unchanged
    probs = supernet.probs()
    assert probs["normal/3"] == pytest.approx(dict(enumerate(torch.softmax(torch.tensor([-5.0, 0.0, 5.0]), 0).tolist())))
    assert sorted(_strength_order(probs, "normal", 3)[:2]) == sorted(chosen)
    for node in (2, 3):  # the probabilities sum to one per node, too
        assert sum(probs[f"reduce/{node}"].values()) == pytest.approx(1.0)


def test_discretized_view_sums_the_chosen_edges_as_the_derived_network() -> None:
    torch.manual_seed(0)
    plain = build_supernet(darts_space(), "mixture")
    torch.manual_seed(0)
    normalized = build_supernet(darts_space(), "mixture", edge_normalization=True)
    with torch.no_grad():
        for beta in betas(normalized).values():
            beta.zero_()  # the same ranking within each node as without edge normalization
    sample = plain.derive()
    assert normalized.derive() == sample
    x = torch.randn(2, 1, 8, 8)
    plain.model.eval(), normalized.model.eval()
    vector = normalized.alpha_vector()
    with torch.no_grad(), plain.discretized(sample), normalized.discretized(sample):
        assert all(c.edges_summed for c in cells(normalized))
        torch.testing.assert_close(normalized.model(x), plain.model(x))
    assert not any(c.edges_summed for c in cells(normalized))
    assert torch.equal(normalized.alpha_vector(), vector)


class _Killed(Exception):
    pass


def test_a_partial_channel_edge_normalized_darts_search_runs_and_resumes(tmp_path) -> None:
    kw = {"space_args": {**SMALL, "width": 8}, "edge_normalization": True, "partial_channels": 2, **FAST}
    whole = run_oneshot("darts", "darts", "digits", epochs=2, **kw)
    assert whole.config["edge_normalization"] is True
    assert {"normal/2", "normal/3", "reduce/2", "reduce/3"} <= set(whole.probs)
    net = space_class("darts").build_network(whole.genotype, width=8, num_cells=3)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    path = tmp_path / "checkpoint.pt"

    def die_in_epoch_2(record):
        if record.epoch == 2:
            raise _Killed  # before epoch 2's checkpoint: as if killed in it

    with pytest.raises(_Killed):
        run_oneshot("darts", "darts", "digits", epochs=2, checkpoint=path, on_epoch_end=die_in_epoch_2, **kw)
    saved = load_checkpoint(path)
    assert saved["run"]["config"]["edge_normalization"] is True
    assert any("_arch_beta" in key for key in saved["search"]["model"])
    resumed = run_oneshot("darts", "darts", "digits", epochs=2, checkpoint=path, resume=True, **kw)
    numbers = [[{k: v for k, v in asdict(r).items() if k != "seconds"} for r in result.history]
               for result in (whole, resumed)]
    assert resumed.resumed_from == 1 and numbers[0] == numbers[1] and resumed.genotype == whole.genotype
    with pytest.raises(Exception, match="edge_normalization"):  # a checkpoint of another setting is refused
        run_oneshot("darts", "darts", "digits", epochs=2, checkpoint=path, resume=True,
                    **{**kw, "edge_normalization": False})


def test_egnas_evolves_beta_with_alpha_and_gumbel_runs() -> None:
    result = run_oneshot("darts", "egnas", "digits", 1, space_args=SMALL, edge_normalization=True, eval_derived=False,
                         warmup_epochs=0, population_size=4, generations=1, **FAST)
    node_probs = [p for label, p in result.probs.items() if label.count("_") == 0 and "/" in label]
    assert len(node_probs) == 4
    # CMA-ES moved beta off its 1e-3 initialisation (sigma 1 in epoch 1, step size 0.1)
    assert max(abs(w - 1 / len(p)) for p in node_probs for w in p.values()) > 1e-3
    result = run_oneshot("darts", "gumbel", "digits", 1, space_args=SMALL, edge_normalization=True, **FAST)
    assert "normal/3" in result.probs and "normal/op_3_0" in result.sample


def test_old_settings_stay_resumable_and_the_trial_flag_reaches_the_config() -> None:
    from nni_bio.strategies.oneshot.trial import parse_args, resolve

    searcher, config = make_strategy("darts")
    assert config.edge_normalization is False
    assert "edge_normalization" not in _run_settings("darts", "darts", "digits", None, config, searcher)["config"]
    searcher, config = make_strategy("darts", edge_normalization=True)
    assert _run_settings("darts", "darts", "digits", None, config, searcher)["config"]["edge_normalization"] is True
    base = ["--space", "darts", "--strategy", "darts"]
    assert resolve(parse_args([*base, "--edge-normalization"]), {})[1] == {"edge_normalization": True}
    assert "edge_normalization" not in resolve(parse_args(base), {})[1]


def test_edge_normalization_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="mixture or gumbel"):
        build_supernet(darts_space(), "path", edge_normalization=True)
    with pytest.raises(ValueError, match="no Cell"):
        build_supernet(TinySpace(), "mixture", edge_normalization=True)
    nb201 = space_class("nb201")
    with pytest.raises(ValueError, match="no Cell"):
        build_supernet(nb201(**space_arguments(nb201, {"width": 4, "cells_per_stage": 1, "rules": ["usf"]}, "digits")),
                       "mixture", edge_normalization=True)
    with pytest.raises(ValueError, match="mixture or gumbel"):
        run_oneshot("darts", "enas", "digits", 1, space_args=SMALL, edge_normalization=True, **FAST)
