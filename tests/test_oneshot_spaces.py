"""One-shot strategies on the cell spaces they ship for (DARTS, NAS-Bench-201), at tiny size: one zero
op per edge, cell derivation, genotypes that rebuild, ``discretized``, ENAS over cells.

Sizes: width 4, 3-4 cells, 2 nodes per DARTS cell, one rule, 8x8 digits, 64 training images."""

import pytest
import torch

from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedCell, DifferentiableMixedLayer
from nni.nas.oneshot.pytorch.supermodule.sampling import PathSamplingCell, PathSamplingLayer

from nni_bio.search_spaces import space_class
from nni_bio.search_spaces import space_arguments
from nni_bio.strategies.oneshot import STRATEGIES, make_strategy, run_oneshot
from nni_bio.strategies.oneshot.search import Search
from nni_bio.strategies.supernet import ZERO_OP, build_supernet

SPACE_ARGS = {"darts": {"width": 4, "num_cells": 4, "num_nodes": 2, "rules": ["usf"]},
              "nb201": {"width": 4, "cells_per_stage": 1, "rules": ["usf"]}}
FAST = {"train_limit": 64, "batch_size": 32}
STRATEGY_ARGS = {"enas": {"batches_per_update": 1, "update_times": 1},
                 "egnas": {"population_size": 4, "generations": 1, "warmup_epochs": 0}}


def make_space(name: str, **overrides):
    cls = space_class(name)
    return cls(**space_arguments(cls, {**SPACE_ARGS[name], **overrides}, "digits"))


def digits_batch(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(5))


# -- item: one zero op per edge ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mixture", "gumbel"])
def test_darts_cell_edges_mix_exactly_one_zero_op(kind):
    space = make_space("darts")
    candidates = {cell: space.candidates(cell) for cell in ("normal", "reduce")}
    supernet = build_supernet(space, kind)
    cells = [m for m in supernet.choices if isinstance(m, DifferentiableMixedCell)]
    assert len(cells) == 4
    for cell in cells:
        assert cell.op_names == candidates[cell.label] and cell.op_names.count(ZERO_OP) == 1
        for edge, alpha in cell._arch_alpha.items():
            implicit_zeros = len(alpha) - len(cell.op_names)
            assert implicit_zeros == 0, f"{edge}: {len(alpha)} logits for {len(cell.op_names)} candidates"
    # logits stay shared by every cell of a type: one vector entry per (cell type, edge, candidate)
    edges = sum(range(2, 2 + 2))  # nodes 2 and 3 read 2 and 3 predecessors
    assert supernet.alpha_vector().numel() == edges * (len(candidates["normal"]) + len(candidates["reduce"]))
    normal = [c for c in cells if c.label == "normal"]
    assert normal[0]._arch_alpha["normal/2_0"] is normal[1]._arch_alpha["normal/2_0"]


def test_a_cell_without_none_keeps_nni_s_implicit_zero_as_its_only_zero_op():
    ops = ["max_pool_3x3", "skip_connect", "sep_conv_3x3"]
    supernet = build_supernet(make_space("darts", ops=ops), "mixture")
    cell = next(m for m in supernet.choices if isinstance(m, DifferentiableMixedCell))
    assert ZERO_OP not in cell.op_names
    assert all(len(alpha) == len(cell.op_names) + 1 for alpha in cell._arch_alpha.values())


def test_the_zero_op_switches_an_edge_off():
    """All weight on ``none`` for one edge: the node's output is the other edges' alone."""
    supernet = build_supernet(make_space("darts"), "mixture")
    model = supernet.model.eval()
    cell = next(m for m in supernet.choices if isinstance(m, DifferentiableMixedCell))
    none = cell.op_names.index(ZERO_OP)
    with torch.no_grad():
        for alpha in cell._arch_alpha.values():
            alpha.fill_(-1.0e4)
            alpha[none] = 0.0
        out = model(digits_batch())
    assert torch.isfinite(out).all()
    # every edge of every normal cell is "none": the normal cells output zeros
    captured = []
    hook = cell.register_forward_hook(lambda m, i, o: captured.append(o[1]))
    with torch.no_grad():
        model(digits_batch())
    hook.remove()
    assert captured and all(torch.count_nonzero(t) == 0 for t in captured)


def test_nb201_edges_hold_none_once_and_no_implicit_zero():
    space = make_space("nb201")
    supernet = build_supernet(space, "mixture")
    layers = [m for m in supernet.choices if isinstance(m, DifferentiableMixedLayer)]
    assert len({m.label for m in layers}) == 6
    for layer in layers:
        assert list(layer.names) == space.candidates() and list(layer.names).count(ZERO_OP) == 1
        assert len(layer._arch_alpha) == len(layer.names)


# -- every strategy on both cell spaces ----------------------------------------------------------------


@pytest.mark.parametrize("space", ["darts", "nb201"])
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_derives_a_valid_architecture_of_the_cell_space(space, strategy):
    result = run_oneshot(space, strategy, "digits", epochs=1, space_args=SPACE_ARGS[space], **FAST,
                         **STRATEGY_ARGS.get(strategy, {}))
    choices = {label: list(m.values) for label, m in make_space(space).simplify().items()}
    assert set(result.sample) == set(choices)
    for label, value in result.sample.items():
        if "/input_" in label:  # a DARTS input choice: one predecessor, as a list
            assert len(value) == 1 and value[0] in choices[label], (label, value)
        else:
            assert value in choices[label], (label, value)
    if strategy != "enas" and space == "darts":
        assert ZERO_OP not in result.sample.values()  # DARTS' derivation never picks "no edge"
    assert result.genotype["sample"] == result.sample
    net = space_class(space).build_network(result.genotype, **_size(result.genotype["args"]))
    assert net(digits_batch(2)).shape == (2, 10)
    record = result.final
    assert 0 <= record.val_acc <= 1 and 0 <= record.derived_val_acc <= 1 and record.sample == result.sample
    if strategy != "enas":  # one distribution per edge, over the candidates, summing to 1 (one zero op)
        edges = set(choices) if space == "nb201" else {f"{c}/{i}_{j}" for c in ("normal", "reduce")
                                                       for i in (2, 3) for j in range(i)}
        assert set(result.probs) == edges
        assert all(sum(p.values()) == pytest.approx(1.0, abs=1e-4) for p in result.probs.values())


def _size(args):
    return {k: v for k, v in args.items() if k in ("width", "num_cells", "cells_per_stage")}


# -- discretized: the mixture computes exactly the derived architecture ------------------------------


def _unchosen(supernet, sample):
    """The candidate modules ``sample`` does not use (cells: ops on edges it does not keep, too)."""
    for m in supernet.choices:
        if isinstance(m, (DifferentiableMixedLayer, PathSamplingLayer)):
            yield from (m[name] for name in m.names if name != sample[m.label])
        elif isinstance(m, (DifferentiableMixedCell, PathSamplingCell)):
            chosen = {(i, sample[f"{m.label}/input_{i}_{k}"][0], sample[f"{m.label}/op_{i}_{k}"])
                      for i in range(m.num_predecessors, m.num_predecessors + m.num_nodes)
                      for k in range(m.num_ops_per_node)}
            for i, node in enumerate(m.ops, start=m.num_predecessors):
                for j, edge in enumerate(node):
                    yield from (op for name, op in edge.items() if (i, j, name) not in chosen)


def _chosen_weights(supernet, sample):
    unused = {id(p) for module in _unchosen(supernet, sample) for p in module.parameters()}
    return [p for p in supernet.weights if id(p) not in unused]


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_discretized_supernet_depends_on_the_derived_ops_only(space):
    supernet = build_supernet(make_space(space), "mixture")
    torch.manual_seed(3)
    supernet.set_alpha_vector(torch.randn_like(supernet.alpha_vector()))
    before = supernet.alpha_vector()
    sample = supernet.derive()
    model, x = supernet.model.eval(), digits_batch()
    with torch.no_grad(), supernet.discretized(sample):
        reference = model(x)
        unused = [p for module in _unchosen(supernet, sample) for p in module.parameters()]
        assert unused, "every candidate has a weight in the derived architecture?"
        for p in unused:
            p.add_(torch.randn_like(p))
        assert torch.allclose(model(x), reference, rtol=0, atol=1e-6)
        for p in _chosen_weights(supernet, sample):
            p.add_(torch.randn_like(p))
        assert not torch.allclose(model(x), reference, atol=1e-3)
    assert torch.equal(supernet.alpha_vector(), before)  # logits restored


# -- EG-NAS and ENAS on the DARTS cells ------------------------------------------------------------


def _search(strategy: str, space: str = "darts", **kwargs):
    searcher, config = make_strategy(strategy, epochs=2, batch_size=16, **kwargs)
    supernet = build_supernet(make_space(space), searcher.supernet_kind)
    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 1, 8, 8, generator=generator),
                                          torch.randint(0, 10, (32,), generator=generator))
    search = Search(supernet, config, data, data, data)
    searcher.setup(search)
    return searcher, supernet


def test_egnas_moves_the_darts_cell_logits_as_one_vector():
    searcher, supernet = _search("egnas", population_size=4, generations=1)
    before = supernet.alpha_vector()
    assert before.numel() == sum(p.numel() for p in supernet.arch_parameters())
    measured = searcher.update_alpha(epoch=1)
    after = supernet.alpha_vector()
    assert not torch.allclose(before, after)
    assert measured["alpha_shift"] == pytest.approx((after - before).norm().item(), rel=1e-4)
    supernet.set_alpha_vector(before)  # the vector round-trips through every cell edge
    assert torch.equal(supernet.alpha_vector(), before)
    cell = next(m for m in supernet.choices if isinstance(m, DifferentiableMixedCell))
    assert all(not a.requires_grad for a in cell._arch_alpha.values())  # no gradient step on alpha


def test_enas_samples_whole_cells_and_runs_the_greedy_path():
    searcher, supernet = _search("enas", batches_per_update=1, update_times=1)
    sample = searcher.derive()
    assert sample == searcher.derive()  # greedy decoding is deterministic
    cells = [m for m in supernet.choices if isinstance(m, PathSamplingCell)]
    assert cells and all(m._sampled == {k: v for k, v in sample.items() if k.startswith(m.label + "/")}
                         for m in cells)
    model, x = supernet.model.eval(), digits_batch()
    with torch.no_grad():
        reference = model(x)
        for module in _unchosen(supernet, sample):
            for p in module.parameters():
                p.add_(torch.randn_like(p))
        assert torch.allclose(model(x), reference, rtol=0, atol=1e-6)  # only the sampled path runs
    searcher.epoch_end(1)  # one controller update from the architecture split
    assert set(searcher.derive()) == set(sample)
