"""The DARTS cell search space over op x learning rule (the paper's space, without the reference defects).

Each edge of the DARTS cell chooses an op *and* its learning rule: candidates are ``op@rule`` for
ops with weights (``sep_conv_3x3@usf``) and plain ``op`` for parameter-free ones. As in DARTS, all
normal cells share one genotype (labels ``normal/...``) and all reduction cells another
(``reduce/...``); NNI's :class:`~nni.nas.nn.pytorch.Cell` holds the choices, so NNI's multi-trial
strategies and its one-shot strategies (DARTS, GumbelDARTS, ENAS, RandomOneShot, Proxyless) run on it.

Default candidates (20 per slot; the reference code had 22):

* ``none``, ``max_pool_3x3``, ``avg_pool_3x3``: once each.
* ``skip_connect``: once. Identity at stride 1; a FactorizedReduce at stride 2 (edges from the
  two cell inputs of a reduction cell) whose convs use ``fixed_rule``. The reference offered three
  ``skip_connect_{u,f,b}`` variants that were all Identity at stride 1 and all plain-backprop at
  stride 2 (defect #1). A slot's candidates cannot depend on which input the slot picks (NNI's
  ``Cell`` chooses op and input separately, with one candidate list per slot), so rule variants
  of ``skip_connect`` would be duplicates on stride-1 edges. ``reduce_skip_rules=True`` offers
  ``skip_connect@rule`` in reduction cells anyway: real rule variants on the stride-2 edges,
  duplicate Identities on the stride-1 ones (nodes 3-5 reading nodes 2-4).
* ``sep_conv_3x3``, ``sep_conv_5x5``, ``dil_conv_3x3``, ``dil_conv_5x5``: one candidate per rule.

**No hidden backprop layer.** The stem conv, the cell-input preprocessing (ReLU-Conv-BN 1x1,
FactorizedReduce after a reduction cell), the classifier (and, in the final network, the
auxiliary head) use ``fixed_rule``, a bio rule by default (``usf``), so a "bio-inspired" network
has no plain-backprop weights (defect #2): the ``bio`` preset. ``preset="reference"`` (or
``fixed_rule="backprop"``) reproduces the reference code's split: those layers and every stride-2
``skip_connect`` learn by backprop, only the cell ops are bio (``darts_cells.PRESETS``);
:func:`bio_weight_split` reports the split for any network.

The supernet uses DARTS' search conventions (BatchNorm ``affine=False``, BatchNorm after pools).
:meth:`DartsSpace.freeze` (and NNI trials) return the pure-PyTorch final network at the search
width/depth (:func:`~nni_bio.search_spaces.darts_net.build_network`, affine BatchNorm, no pool BN);
retrain with ``DartsSpace.build_network(genotype)`` (C=36, 20 cells by default).

One-shot: NNI's differentiable cell adds an implicit zero op to every edge, a second one next to
``none``; nni-bio's supernets (:func:`nni_bio.strategies.supernet.build_supernet`) drop it, so each
edge mixes its candidates with ``none`` as the only zero op, as DARTS does. NNI's own cell export may
pick ``none``; :func:`sample_from_edge_weights` applies DARTS' own derivation rule to
``export_probs()`` instead. See ``nni-notes.md`` §9 on mixing rules in one supernet.

Example:
    >>> from nni_bio.search_spaces.darts import DartsSpace
    >>> space = DartsSpace(width=4, num_cells=3, rules=["usf", "fa"])
    >>> space.candidates("normal")[:5]
    ['none', 'max_pool_3x3', 'avg_pool_3x3', 'skip_connect', 'sep_conv_3x3@fa']
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any

from torch import Tensor, nn

from nni_bio.nas.mutables import ModelSpace  # first: applies the NNI compat shims
from nni_bio.core._registry import get_rule
from nni_bio.nas.ops import (DARTS_OPS, FactorizedReduce, ReLUConvBN, bio_weight_split, build_op,
                         unsupported_candidates)
from nni_bio.search_spaces.darts_cells import (DEFAULT_RULES, NUM_INPUTS, OPS_PER_NODE, GenotypeError, cell_candidates,
                                               export_genotype, full_args, preset_op, reduction_cells,
                                               sample_from_edge_weights)
from nni_bio.search_spaces.darts_net import BIODARTS, build_network

from nni.nas.nn.pytorch import Cell  # noqa: E402
from nni.nas.space import current_model  # noqa: E402


class _Preprocessor(nn.Module):
    """Aligns the two cell inputs to C channels (FactorizedReduce after a reduction cell)."""

    def __init__(self, C_prev_prev: int, C_prev: int, C: int, *, reduction_prev: bool, rule: str):
        super().__init__()
        self.pre0 = (FactorizedReduce(C_prev_prev, C, rule=rule, affine=False) if reduction_prev
                     else ReLUConvBN(C_prev_prev, C, 1, 1, 0, rule=rule, affine=False))
        self.pre1 = ReLUConvBN(C_prev, C, 1, 1, 0, rule=rule, affine=False)

    def forward(self, inputs: list[Tensor]) -> list[Tensor]:
        return [self.pre0(inputs[0]), self.pre1(inputs[1])]


class _Postprocessor(nn.Module):
    """The cell returns (previous cell's output, its own output) so cells chain directly."""

    def forward(self, this_cell: Tensor, previous: list[Tensor]) -> list[Tensor]:
        return [previous[-1], this_cell]


def _op_factory(node_index: int, op_index: int, input_index: int | None, *, name: str, C: int,
                reduction: bool, fixed_rule: str, preset: str = "bio") -> nn.Module:
    # Stride 2 on edges from the cell inputs of a reduction cell. The input is unknown (None) while
    # NNI builds the search space; one-shot supernets and frozen cells pass it.
    stride = 2 if reduction and (input_index is None or input_index < NUM_INPUTS) else 1
    return build_op(preset_op(name, stride, preset), C, C, stride, rule=fixed_rule, affine=False, pool_bn=True)


class DartsSpace(ModelSpace):
    """DARTS cell space whose candidates are op x learning rule (see the module docstring).

    Args:
        in_channels: image channels.
        num_classes: classes of the classifier.
        width: C, channels of the first cells' ops (16 in the DARTS supernet).
        num_cells: cells; reductions at L//3 and 2L//3.
        num_nodes: intermediate nodes per cell (two ops each).
        stem_multiplier: the stem outputs ``stem_multiplier * width`` channels.
        rules: learning rules searched for each op with weights (any registered rule).
        ops: op names (see :data:`nni_bio.nas.ops.OPS`).
        fixed_rule: rule of the stem, cell preprocessing, classifier and stride-2 ``skip_connect``
            (default: ``usf``, or ``backprop`` with ``preset="reference"``).
        reduce_skip_rules: offer ``skip_connect@rule`` in reduction cells.
        preset: ``"bio"`` (no backprop layer) or ``"reference"`` (the reference code's backprop
            stem, pre-processing, skip FactorizedReduce and classifier); default: from ``fixed_rule``.
    """

    space_name = "darts"

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 16, num_cells: int = 8,
                 num_nodes: int = 4, stem_multiplier: int = 3, rules: Sequence[str] = DEFAULT_RULES,
                 ops: Sequence[str] = DARTS_OPS, fixed_rule: str | None = None, reduce_skip_rules: bool = False,
                 preset: str | None = None):
        super().__init__()
        given = {k: v for k, v in (("fixed_rule", fixed_rule), ("preset", preset)) if v is not None}
        self.space_args = full_args(dict(
            in_channels=in_channels, num_classes=num_classes, width=width, num_cells=num_cells, num_nodes=num_nodes,
            stem_multiplier=stem_multiplier, rules=list(rules), ops=list(ops), reduce_skip_rules=reduce_skip_rules,
            **given,
        ))
        fixed_rule, preset = self.space_args["fixed_rule"], self.space_args["preset"]
        sample = current_model()
        if sample is not None:
            # NNI re-instantiates the space inside a fixed-architecture context in each trial: build the
            # final network directly (the same one freeze() returns) instead of the supernet.
            self.network = build_network(export_genotype(sample, self.space_args), width=width, num_cells=num_cells)
            return
        self.network = None
        dropped = unsupported_candidates(self.space_args["ops"], self.space_args["rules"])
        if dropped:
            warnings.warn(f"candidates left out because their rule cannot build them: {', '.join(dropped)}",
                          stacklevel=2)
        C = stem_multiplier * width
        self.stem = nn.Sequential(get_rule(fixed_rule).conv2d(in_channels, C, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(C))
        C_prev_prev, C_prev, C_curr = C, C, width
        reduction_prev = False
        self.cells = nn.ModuleList()
        for i in range(num_cells):
            reduction = i in reduction_cells(num_cells)
            if reduction:
                C_curr *= 2
            cell_type = "reduce" if reduction else "normal"
            factories = {name: partial(_op_factory, name=name, C=C_curr, reduction=reduction, fixed_rule=fixed_rule,
                                       preset=preset)
                         for name in cell_candidates(self.space_args, cell_type)}
            self.cells.append(Cell(
                factories, num_nodes, num_ops_per_node=OPS_PER_NODE, num_predecessors=NUM_INPUTS, merge_op="all",
                preprocessor=_Preprocessor(C_prev_prev, C_prev, C_curr, reduction_prev=reduction_prev, rule=fixed_rule),
                postprocessor=_Postprocessor(), label=cell_type,
            ))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, num_nodes * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = get_rule(fixed_rule).linear(C_prev, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if self.network is not None:
            return self.network(x)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = cell([s0, s1])
        return self.classifier(self.global_pooling(s1).flatten(1))

    def candidates(self, cell_type: str) -> list[str]:
        """Candidate names of every slot of the ``"normal"`` or ``"reduce"`` cells."""
        return cell_candidates(self.space_args, cell_type)

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        """The pure-PyTorch network of ``sample`` at the search width and depth (a :class:`DartsNetwork`)."""
        return build_network(export_genotype(sample, self.space_args), width=self.space_args["width"],
                             num_cells=self.space_args["num_cells"])

    @classmethod
    def export_genotype(cls, sample: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """JSON genotype of ``sample`` (see :mod:`nni_bio.search_spaces.darts_net`)."""
        return export_genotype(sample, args)

    @classmethod
    def build_network(cls, genotype: dict[str, Any], **options: Any) -> nn.Module:
        """The final network (:func:`~nni_bio.search_spaces.darts_net.build_network`; C=36, 20 cells by default)."""
        return build_network(genotype, **options)


__all__ = [
    "BIODARTS", "DartsSpace", "GenotypeError", "bio_weight_split", "build_network", "export_genotype",
    "sample_from_edge_weights",
]
