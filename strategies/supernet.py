"""One-shot supernets over op x rule spaces, and what nni-bio's one-shot strategies need on top.

:func:`build_supernet` converts a model space **in place** with NNI's own mutation hooks (the same
ones NNI's ``DARTS``, ``GumbelDARTS`` and ``RandomOneShot``/``ENAS`` strategies use), so every NNI
primitive those strategies support works here too: ``LayerChoice`` (every ``rule_choice`` and
``op_rule_choice``), ``InputChoice`` and ``Cell`` (the DARTS space). Three kinds:

* ``"mixture"``: each choice outputs ``sum_k softmax(alpha)_k * candidate_k(x)`` (DARTS, EG-NAS).
* ``"gumbel"``: the same with Gumbel-softmax weights (GumbelDARTS; ``hard`` for one-hot forward).
* ``"path"``: one sampled candidate per choice (ENAS); :meth:`Supernet.resample` picks the path.

``partial_channels=k`` (PC-DARTS' K, Xu et al. 2020, arXiv 1907.05737, as EG-NAS uses it) makes
every edge of a ``Cell`` mix its candidates on 1/k of the channels only: the ops are built k times
narrower, the other channels bypass them (max-pooled on stride-2 edges) and a channel shuffle
interleaves both, so the op x rule supernet needs about k times less memory for its mixed ops.

``edge_normalization=True`` is PC-DARTS' second part (its ``model_search.py``), independent of k:
every node i of a ``Cell`` gets a learnable architecture parameter beta of one logit per incoming
edge (``{cell}/{i}`` in ``model``'s ``_arch_beta``, shared between cells of one label as the alphas
are; initialised as ``1e-3 * randn``), and the node outputs ``sum_j softmax(beta)_j * edge_j(x_j)``
(plain softmax, also in gumbel supernets) instead of DARTS' ``sum_j edge_j(x_j)``; with uniform beta
that is the DARTS node divided by its i inputs. beta is an architecture parameter like alpha
(:meth:`Supernet.arch_parameters`, :meth:`Supernet.alpha_vector`, checkpoints; never in
:attr:`Supernet.weights`). The derivation ranks node i's inputs by ``softmax(beta)_j`` times the
edge's best non-``none`` op weight (PC-DARTS' ``genotype``); the op of each kept edge is unchanged.
:meth:`Supernet.probs` shows ``softmax(beta)`` as ``{cell}/{i}: {j: weight}``; the discretized view
sums the chosen edges unweighted, as the derived network does.

Every edge of a differentiable cell mixes exactly one zero op, as in DARTS: NNI adds an implicit
zero logit to each edge, which :func:`build_supernet` drops where the candidates already hold
``none`` (the DARTS space), so "no edge" is not weighed twice.

:class:`Supernet` adds what NNI keeps private or noisy: the architecture parameters by name, in a
fixed order (CMA-ES flattens them); noise-free probabilities; the derived architecture (argmax per
label, DARTS' top-2-incoming-edges rule inside a ``Cell``); a discretised view of the mixture
supernet for evaluating the derived architecture with the shared weights. The context managers
:func:`exact_feedback` and :func:`same_feedback_draw` serve the architecture step (see
:mod:`nni_bio.strategies.darts`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nni_bio.nas import mutables as _nas  # noqa: F401  (applies nni_bio.nas._compat before NNI is imported below)
from nni_bio.core._registry import get_rule
from nni_bio.core.layers import RuleLayer

from nni.nas.nn.pytorch.cell import preprocess_cell_inputs  # noqa: E402
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule  # noqa: E402
from nni.nas.oneshot.pytorch.supermodule.differentiable import (  # noqa: E402
    DifferentiableMixedCell, DifferentiableMixedInput, DifferentiableMixedLayer, GumbelSoftmax)

KINDS = ("mixture", "gumbel", "path")
#: the zero op of the cell spaces: "no edge"
ZERO_OP = "none"
#: candidates never chosen by the DARTS derivation rule inside a cell
EXCLUDED_IN_CELL = (ZERO_OP,)
_OFF = -1.0e4  # a logit whose softmax weight is exactly 0 in float32


def build_supernet(space: nn.Module, kind: str, *, partial_channels: int = 1,
                   edge_normalization: bool = False) -> Supernet:
    """Convert ``space`` (an NNI ``ModelSpace``, changed in place) into a one-shot supernet of ``kind``.

    ``partial_channels=k > 1``: partial-channel edges in every ``Cell`` (see the module docstring;
    ``mixture`` and ``gumbel`` supernets of spaces whose cell op factories take the width as ``C``,
    as the DARTS space's do). ``edge_normalization``: PC-DARTS' learned weight per incoming edge of
    every ``Cell`` node (see the module docstring; ``mixture`` and ``gumbel`` supernets of spaces
    with cells).
    """
    from nni.nas.strategy import DARTS, GumbelDARTS, RandomOneShot

    if kind not in KINDS:
        raise ValueError(f"supernet kind must be one of {KINDS}, not {kind!r}")
    if edge_normalization:
        _check_edge_normalization(space, kind)
    if partial_channels != 1:
        _narrow_cell_ops(space, kind, partial_channels)
    converter = {"mixture": DARTS, "gumbel": GumbelDARTS, "path": RandomOneShot}[kind]()
    converter.mutate_model(space)
    _one_zero_op_per_edge(space)
    if partial_channels != 1 or edge_normalization:
        betas: dict[str, nn.Parameter] = {}  # one beta per node label: shared by the cells of one label
        for m in space.modules():
            if type(m) is DifferentiableMixedCell:
                m.__class__ = PartialChannelMixedCell
                m.partial_channels = partial_channels
                if edge_normalization:
                    m._arch_beta = nn.ParameterDict({
                        key: betas.setdefault(key, nn.Parameter(torch.randn(i) * 1e-3))
                        for i in range(m.num_predecessors, m.num_predecessors + m.num_nodes)
                        for key in [f"{m.label}/{i}"]})
        if edge_normalization and not betas:
            raise ValueError("edge_normalization: no Cell of the space became a differentiable cell")
    return Supernet(space, kind)


def _check_edge_normalization(space: nn.Module, kind: str) -> None:
    from nni.nas.nn.pytorch import Cell

    if kind == "path":
        raise ValueError("edge_normalization needs a mixture or gumbel supernet (darts, darts2, gumbel, egnas), "
                         "not a 'path' one (a sampled path runs one input per node)")
    if not any(isinstance(m, Cell) for m in space.modules()):
        raise ValueError("edge_normalization: the space has no Cell (edge normalization weighs the incoming edges "
                         "of a cell's nodes; the DARTS space has cells)")


def _narrow_cell_ops(space: nn.Module, kind: str, k: int) -> None:
    """Make every ``Cell``'s op factories build ops of 1/k of their width (before NNI converts the cells)."""
    from nni.nas.nn.pytorch import Cell

    if kind == "path" or k < 1:
        raise ValueError(f"partial_channels={k}: partial-channel edges need a mixture or gumbel supernet and k >= 1"
                         + (f", not a {kind!r} one (a sampled path runs one candidate)" if kind == "path" else ""))
    cells = [m for m in space.modules() if isinstance(m, Cell)]
    if not cells:
        raise ValueError(f"partial_channels={k}: the space has no Cell (partial channels apply to cell edges)")
    for cell in cells:
        factories = cell.op_candidates_factory
        if not isinstance(factories, dict) or not all(
                isinstance(f, functools.partial) and isinstance(f.keywords.get("C"), int) for f in factories.values()):
            raise ValueError(f"partial_channels={k}: cell {cell.label!r} does not build its ops from factories taking "
                             "the width as C (as the DARTS space's do)")
        width = next(iter(factories.values())).keywords["C"]
        if width % k:
            raise ValueError(f"partial_channels={k} does not divide the {width} channels of cell {cell.label!r}")
        cell.op_candidates_factory = {name: functools.partial(f.func, *f.args, **{**f.keywords, "C": width // k})
                                      for name, f in factories.items()}


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet's channel shuffle: (N, g*c, H, W) -> channel ``i*g + j`` takes group ``j``'s channel ``i``."""
    n, channels, h, w = x.shape
    return x.view(n, groups, channels // groups, h, w).transpose(1, 2).reshape(n, channels, h, w)


class PartialChannelMixedCell(DifferentiableMixedCell):
    """NNI's differentiable cell with PC-DARTS edges: each edge mixes its (narrow) candidates on the
    first 1/k of its input's channels, passes the rest through (max-pooled where the edge has stride
    2), concatenates both and shuffles the channels in k groups (k = 1: NNI's edges). With edge
    normalization (``_arch_beta``) node i weighs its edges by ``softmax(beta)``. Set by
    :func:`build_supernet`."""

    partial_channels: int
    # NNI's arch_parameters() yields the parameters under these names: beta is an architecture parameter
    _arch_parameter_names: list[str] = ["_arch_alpha", "_arch_beta"]
    #: inside :meth:`Supernet.discretized`: nodes sum their edges unweighted (as the derived network)
    edges_summed: bool = False

    def edge_weights(self, node: int) -> Tensor | None:
        """``softmax(beta)`` over node ``node``'s incoming edges (``None``: no edge normalization)."""
        beta = getattr(self, "_arch_beta", None)  # a submodule: no class default (it would shadow it)
        if beta is None or self.edges_summed:
            return None
        return torch.softmax(beta[f"{self.label}/{node}"], -1)

    def forward(self, *inputs: list[Tensor] | Tensor) -> tuple[Tensor, ...] | Tensor:
        k = self.partial_channels
        processed_inputs = preprocess_cell_inputs(self.num_predecessors, *inputs)
        states: list[Tensor] = self.preprocessor(processed_inputs)
        for i, ops in enumerate(self.ops, start=self.num_predecessors):
            current_state = []
            for j in range(i):
                x = states[j]
                sampled, bypass = x[:, :x.size(1) // k], x[:, x.size(1) // k:]
                op_results = torch.stack([op(sampled) for op in ops[j].values()])
                op_weights = self._softmax(self._arch_alpha[f"{self.label}/{i}_{j}"])
                if op_weights.size(0) == op_results.size(0) + 1:  # NNI's implicit zero op (a cell without none)
                    op_results = torch.cat((op_results, torch.zeros_like(op_results[:1])), 0)
                mixed = torch.sum(op_results * op_weights.view(-1, *[1] * (op_results.dim() - 1)), 0)
                if k == 1:
                    current_state.append(mixed)
                    continue
                if mixed.shape[2:] != bypass.shape[2:]:
                    bypass = F.max_pool2d(bypass, 2, 2, ceil_mode=True)
                current_state.append(channel_shuffle(torch.cat([mixed, bypass], 1), k))
            edge_weights = self.edge_weights(i)
            if edge_weights is not None:  # PC-DARTS' edge normalization
                current_state = [w * s for w, s in zip(edge_weights.to(current_state[0].dtype), current_state)]
            states.append(sum(current_state))
        this_cell = torch.cat(states[self.num_predecessors:], self.concat_dim)
        return self.postprocessor(this_cell, processed_inputs)


def _one_zero_op_per_edge(model: nn.Module) -> None:
    """Give every edge of a differentiable cell exactly one zero op, as DARTS has.

    NNI's ``DifferentiableMixedCell`` appends an implicit zero op to every edge (``len(ops) + 1``
    logits). A cell whose candidates already hold :data:`ZERO_OP` would then mix two zero ops and
    weigh "no edge" twice; there the implicit entry is dropped (NNI's forward takes ``len(ops)``
    logits as they are), so ``none`` is the edge's only zero op with one logit, as in DARTS. A cell
    without ``none`` keeps the implicit zero as its only one. Logits shared between cells (all
    normal cells, all reduction cells) stay shared.
    """
    replaced: dict[int, tuple[nn.Parameter, nn.Parameter]] = {}  # id(old) -> (old kept alive, new)
    for m in model.modules():
        if not isinstance(m, DifferentiableMixedCell) or ZERO_OP not in m.op_names:
            continue
        for edge, alpha in list(m._arch_alpha.items()):
            if len(alpha) != len(m.op_names) + 1:
                continue
            if id(alpha) not in replaced:
                replaced[id(alpha)] = (alpha, nn.Parameter(alpha.detach()[:len(m.op_names)].clone()))
            m._arch_alpha[edge] = replaced[id(alpha)][1]


class Supernet:
    """A converted model space (``.model``) with its architecture parameters and derivation rule."""

    def __init__(self, model: nn.Module, kind: str):
        self.model, self.kind = model, kind
        self.choices = [m for m in model.modules() if isinstance(m, BaseSuperNetModule)]
        arch_ids = {id(p) for m in self.choices if hasattr(m, "arch_parameters") for p in m.arch_parameters()}
        #: architecture parameters by their name in ``model`` (shared ones once), in module order
        self.arch: dict[str, nn.Parameter] = {n: p for n, p in model.named_parameters() if id(p) in arch_ids}
        self.weights: list[nn.Parameter] = [p for p in model.parameters() if id(p) not in arch_ids and p.requires_grad]
        if kind != "path" and not self.arch:
            raise ValueError("the space has no choices a one-shot strategy could search")

    # -- architecture parameters ------------------------------------------------------------------

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.arch.values())

    def alpha_vector(self) -> Tensor:
        """All architecture logits, flattened in :attr:`arch` order (a float32 copy on the CPU)."""
        return torch.cat([p.detach().flatten().float().cpu() for p in self.arch.values()]).clone()

    def set_alpha_vector(self, vector: Tensor) -> None:
        """Write a flat vector (as from :meth:`alpha_vector`) back into the architecture parameters."""
        vector = torch.as_tensor(vector, dtype=torch.float32).flatten()
        if vector.numel() != sum(p.numel() for p in self.arch.values()):
            raise ValueError(f"alpha vector has {vector.numel()} entries, the supernet "
                             f"{sum(p.numel() for p in self.arch.values())}")
        offset = 0
        with torch.no_grad():
            for p in self.arch.values():
                p.copy_(vector[offset:offset + p.numel()].view_as(p).to(p.device))
                offset += p.numel()

    # -- probabilities and the derived architecture -----------------------------------------------

    def probs(self) -> dict[str, dict[Any, float]]:
        """Noise-free softmax of every choice: ``{label: {candidate: p}}``; a cell edge is labelled
        ``cell/target_source``; NNI's implicit zero op, which only a cell without ``none`` keeps (see
        :func:`build_supernet`), is left out (as NNI's ``export_probs``). With edge normalization,
        ``cell/target`` is a node's ``softmax(beta)`` over its inputs: ``{source: weight}``."""
        out: dict[str, dict[Any, float]] = {}
        for m in self.choices:
            if isinstance(m, DifferentiableMixedLayer):
                out.setdefault(m.label, dict(zip(m.names, _softmax(m._arch_alpha))))
            elif isinstance(m, DifferentiableMixedInput):
                out.setdefault(m.label, dict(enumerate(_softmax(m._arch_alpha))))
            elif isinstance(m, DifferentiableMixedCell):
                for edge, alpha in m._arch_alpha.items():
                    out.setdefault(edge, dict(zip(m.op_names, _softmax(alpha))))
                for node, beta in (getattr(m, "_arch_beta", None) or {}).items():  # edge normalization
                    out.setdefault(node, dict(enumerate(_softmax(beta))))
        return out

    def derive(self) -> dict[str, Any]:
        """The derived architecture of a mixture/gumbel supernet as an NNI sample.

        A ``LayerChoice`` takes its most probable candidate, an ``InputChoice`` its ``n_chosen``
        most probable inputs; inside a ``Cell`` every node keeps the ``num_ops_per_node`` incoming
        edges whose best non-``none`` op weighs most, each with that op (DARTS' rule, as
        ``darts_cells.sample_from_edge_weights``; NNI's own cell export may pick ``none``); with edge
        normalization an edge's weight is that op's times ``softmax(beta)`` of the edge (PC-DARTS).
        """
        if self.kind == "path":
            raise TypeError("a path supernet has no architecture weights: ask its controller (ENAS)")
        sample: dict[str, Any] = {}
        for m in self.choices:
            if isinstance(m, DifferentiableMixedLayer):
                sample.setdefault(m.label, m.names[int(torch.argmax(m._arch_alpha))])
            elif isinstance(m, DifferentiableMixedInput):
                sample.setdefault(m.label, sorted(torch.argsort(-m._arch_alpha.detach())[:m.n_chosen].tolist()))
            elif isinstance(m, DifferentiableMixedCell):
                for label, value in _derive_cell(m).items():
                    sample.setdefault(label, value)
            else:  # mixed Repeat depths, mixed operations: NNI's argmax export
                sample.update(m.export(sample))
        return sample

    @contextlib.contextmanager
    def discretized(self, sample: dict[str, Any]) -> Iterator[None]:
        """Temporarily set the logits so the mixture computes exactly ``sample`` (other weights 0;
        edge-normalized nodes sum their chosen edges unweighted, as the derived network does)."""
        saved = self.alpha_vector()
        normalized = [m for m in self.choices if isinstance(m, PartialChannelMixedCell)]
        try:
            for m in normalized:
                m.edges_summed = True
            with torch.no_grad():
                for m in self.choices:
                    if isinstance(m, DifferentiableMixedLayer):
                        _one_hot_(m._arch_alpha, [m.names.index(sample[m.label])])
                    elif isinstance(m, DifferentiableMixedInput):
                        _one_hot_(m._arch_alpha, list(sample[m.label]))
                    elif isinstance(m, DifferentiableMixedCell):
                        _discretize_cell_(m, sample)
            with plain_softmax(self.model):
                yield
        finally:
            for m in normalized:
                m.edges_summed = False
            self.set_alpha_vector(saved)

    # -- path sampling ----------------------------------------------------------------------------

    def resample(self, sample: dict[str, Any]) -> None:
        """Make a path supernet compute ``sample`` (every label must be present)."""
        memo = dict(sample)
        for m in self.choices:
            m.resample(memo)


def _softmax(alpha: Tensor) -> list[float]:
    return torch.softmax(alpha.detach().float(), -1).tolist()


def _one_hot_(alpha: Tensor, indices: list[int]) -> None:
    alpha.fill_(_OFF)
    alpha[indices] = 0.0


def _derive_cell(cell: DifferentiableMixedCell) -> dict[str, Any]:
    out: dict[str, Any] = {}
    names = cell.op_names
    for i in range(cell.num_predecessors, cell.num_predecessors + cell.num_nodes):
        beta = getattr(cell, "_arch_beta", None)  # edge normalization (also inside ``discretized``)
        edge_weights = None if beta is None else _softmax(beta[f"{cell.label}/{i}"])
        edges = []
        for j in range(i):
            weights = _softmax(cell._arch_alpha[f"{cell.label}/{i}_{j}"])[:len(names)]  # drop the implicit zero
            allowed = [(w, name) for w, name in zip(weights, names) if name not in EXCLUDED_IN_CELL]
            if not allowed:
                raise ValueError(f"cell {cell.label!r} has no candidate besides {EXCLUDED_IN_CELL}")
            w, name = max(allowed, key=lambda t: t[0])
            if edge_weights is not None:  # PC-DARTS: the op weights times the edge's weight
                w *= edge_weights[j]
            edges.append((w, j, name))
        kept = sorted(sorted(edges, key=lambda t: -t[0])[:cell.num_ops_per_node], key=lambda t: t[1])
        for k in range(cell.num_ops_per_node):
            _, j, name = kept[k % len(kept)]
            out[f"{cell.label}/op_{i}_{k}"], out[f"{cell.label}/input_{i}_{k}"] = name, [j]
    return out


def _discretize_cell_(cell: DifferentiableMixedCell, sample: dict[str, Any]) -> None:
    chosen: dict[tuple[int, int], list[int]] = {}
    for i in range(cell.num_predecessors, cell.num_predecessors + cell.num_nodes):
        for k in range(cell.num_ops_per_node):
            j = int(sample[f"{cell.label}/input_{i}_{k}"][0])
            chosen.setdefault((i, j), []).append(cell.op_names.index(sample[f"{cell.label}/op_{i}_{k}"]))
    for edge, alpha in cell._arch_alpha.items():
        i, j = (int(t) for t in edge.rsplit("/", 1)[1].split("_"))
        if (i, j) in chosen:
            # An edge chosen twice with two ops sums them: the weights of a sum of two ops are 1 each,
            # which a softmax cannot express, so keep the shared weight (1/2 each) and note it.
            _one_hot_(alpha, chosen[(i, j)])
        elif len(alpha) == len(cell.op_names) + 1:
            _one_hot_(alpha, [len(cell.op_names)])  # the implicit zero op: the edge contributes nothing
        elif "none" in cell.op_names:
            _one_hot_(alpha, [cell.op_names.index("none")])
        else:
            raise ValueError(f"cannot switch off edge {edge}: no zero op")


# -- contexts for the architecture step -----------------------------------------------------------


@contextlib.contextmanager
def exact_feedback(model: nn.Module) -> Iterator[None]:
    """Every rule layer back-propagates exactly (W^T) inside the block; rule state is kept aside
    and put back afterwards (unlike :func:`nni_bio.swap_rule`, which starts fresh rule state)."""
    saved = [(m, m.feedback) for m in model.modules() if isinstance(m, RuleLayer)]
    backprop = get_rule("backprop")
    try:
        for layer, _ in saved:
            layer.feedback = backprop.feedback(layer)
        yield
    finally:
        for layer, feedback in saved:
            layer.feedback = feedback


@contextlib.contextmanager
def same_feedback_draw(model: nn.Module) -> Iterator[None]:
    """Forwards inside the block are not training steps for the rules: feedback that is redrawn per
    step (brSF) keeps its current draw. BatchNorm and everything else stay in their mode."""
    layers = [m for m in model.modules() if isinstance(m, RuleLayer) and m.training]
    try:
        for m in layers:
            m.training = False
        yield
    finally:
        for m in layers:
            m.training = True


@contextlib.contextmanager
def plain_softmax(model: nn.Module) -> Iterator[None]:
    """Gumbel-softmax choices use the noise-free softmax of their logits inside the block."""
    swapped = [m for m in model.modules() if isinstance(getattr(m, "_softmax", None), GumbelSoftmax)]
    saved = [m._softmax for m in swapped]
    try:
        for m in swapped:
            m._softmax = nn.Softmax(-1)
        yield
    finally:
        for m, softmax in zip(swapped, saved):
            m._softmax = softmax


def set_gumbel(model: nn.Module, *, tau: float, hard: bool) -> None:
    """Temperature and hardness of every Gumbel-softmax choice."""
    for m in model.modules():
        if isinstance(m, GumbelSoftmax):
            m.tau, m.hard = tau, hard


__all__ = ["KINDS", "PartialChannelMixedCell", "Supernet", "build_supernet", "channel_shuffle", "exact_feedback",
           "plain_softmax", "same_feedback_draw", "set_gumbel"]
