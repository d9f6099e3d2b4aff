"""The NAS-Bench-201 cell space over op x learning rule.

Skeleton (as NAS-Bench-201): stem conv, three stages of ``cells_per_stage`` cells (width, 2x, 4x)
joined by residual reduction blocks, BN-ReLU, global pooling, classifier. The cell has 4 nodes and
6 edges; each edge is an ``op_rule_choice``: ``none``, ``skip_connect`` and ``avg_pool_3x3`` once
(no weights in the cell), ``nor_conv_1x1``/``nor_conv_3x3`` (ReLU-Conv-BN) once per rule. Edge
labels (``cell/0_1`` ... ``cell/2_3``) are shared by every cell: one cell genotype.

The stem conv, the reduction blocks and the classifier use ``fixed_rule`` (a bio rule by default),
so no weight learns by hidden backprop; :func:`bio_weight_split` reports the split.

:meth:`NB201Space.freeze` and NNI trials give the pure-PyTorch
:class:`~nni_bio.search_spaces.nb201_net.NB201Network`; ``NB201Space.build_network(genotype,
width=..., cells_per_stage=...)`` rebuilds it at any size.

Example:
    >>> from nni_bio.search_spaces.nb201 import NB201Space
    >>> NB201Space(width=4, cells_per_stage=1, rules=["usf", "fa"]).candidates()[:4]
    ['none', 'skip_connect', 'nor_conv_1x1@fa', 'nor_conv_1x1@usf']
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any

from torch import Tensor, nn

from nni_bio.nas.mutables import ModelSpace, op_rule_choice  # first: applies the NNI compat shims
from nni_bio.core._registry import get_rule
from nni_bio.nas.ops import (NB201_OPS, ResNetBasicBlock, bio_weight_split, build_op, has_weights,
                         unsupported_candidates)
from nni_bio.search_spaces.nb201_net import (DEFAULT_RULES, EDGES, NUM_NODES, GenotypeError, arch_string,
                                             build_network, cell_candidates, export_genotype, full_args,
                                             sample_from_arch)

from nni.mutable import label_scope  # noqa: E402
from nni.nas.nn.pytorch import MutableModule  # noqa: E402
from nni.nas.space import current_model  # noqa: E402


def _edge_op(rule: str | None, *, op: str, C: int, fixed_rule: str) -> nn.Module:
    return build_op(op, C, C, 1, rule=rule or fixed_rule)


class _SearchCell(MutableModule):
    """NAS-Bench-201 cell whose 6 edges are op x rule choices labelled ``cell/<source>_<target>``."""

    def __init__(self, C: int, *, ops: Sequence[str], rules: Sequence[str], fixed_rule: str):
        super().__init__()
        builders = {op: partial(_edge_op, op=op, C=C, fixed_rule=fixed_rule) for op in ops}
        free = [op for op in ops if not has_weights(op, C, C, 1)]
        self.edges = list(EDGES)
        with label_scope("cell"):
            self.ops = nn.ModuleList(op_rule_choice(builders, rules=rules, label=f"{j}_{i}", parameter_free=free)
                                     for j, i in self.edges)

    def forward(self, x: Tensor) -> Tensor:
        nodes = [x]
        for i in range(1, NUM_NODES):
            nodes.append(sum(op(nodes[j]) for op, (j, t) in zip(self.ops, self.edges) if t == i))
        return nodes[-1]


class NB201Space(ModelSpace):
    """NAS-Bench-201 space whose edge candidates are op x learning rule (see the module docstring).

    Args:
        in_channels: image channels.
        num_classes: classes of the classifier.
        width: channels of the first stage (16 in NAS-Bench-201).
        cells_per_stage: cells per stage (N=5 in NAS-Bench-201).
        rules: learning rules searched for ops with weights (any registered rule).
        fixed_rule: rule of the stem, the residual reduction blocks and the classifier.
        ops: op names (see :data:`nni_bio.nas.ops.OPS`).
    """

    space_name = "nb201"

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 16, cells_per_stage: int = 5,
                 rules: Sequence[str] = DEFAULT_RULES, fixed_rule: str = "usf", ops: Sequence[str] = NB201_OPS):
        super().__init__()
        self.space_args = full_args(dict(in_channels=in_channels, num_classes=num_classes, width=width,
                                         cells_per_stage=cells_per_stage, rules=list(rules), fixed_rule=fixed_rule,
                                         ops=list(ops)))
        sample = current_model()
        if sample is not None:
            # NNI re-instantiates the space in a fixed-architecture context in each trial: build the
            # final network directly (the one freeze() returns).
            self.network = build_network(export_genotype(sample, self.space_args))
            return
        self.network = None
        dropped = unsupported_candidates(self.space_args["ops"], self.space_args["rules"])
        if dropped:
            warnings.warn(f"candidates left out because their rule cannot build them: {', '.join(dropped)}",
                          stacklevel=2)
        rule = get_rule(fixed_rule)
        self.stem = nn.Sequential(rule.conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        layers: list[nn.Module] = []
        C = width
        for stage in range(3):
            if stage > 0:
                layers.append(ResNetBasicBlock(C, 2 * C, 2, rule=fixed_rule))
                C *= 2
            layers.extend(_SearchCell(C, ops=self.space_args["ops"], rules=self.space_args["rules"],
                                      fixed_rule=fixed_rule) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = rule.linear(C, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if self.network is not None:
            return self.network(x)
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(self.global_pooling(x).flatten(1))

    def candidates(self) -> list[str]:
        """Candidate names of every edge."""
        return cell_candidates(self.space_args)

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        """The pure-PyTorch network of ``sample`` (an :class:`NB201Network` of the space's size)."""
        return build_network(export_genotype(sample, self.space_args))

    @classmethod
    def export_genotype(cls, sample: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """JSON genotype of ``sample``, with the NAS-Bench-201 arch string (see :mod:`.nb201_net`)."""
        return export_genotype(sample, args)

    @classmethod
    def build_network(cls, genotype: dict[str, Any], **options: Any) -> nn.Module:
        """The network of ``genotype``; options ``width``, ``cells_per_stage``, ``num_classes``, ``in_channels``."""
        return build_network(genotype, **options)


__all__ = ["GenotypeError", "NB201Space", "arch_string", "bio_weight_split", "build_network", "export_genotype",
           "sample_from_arch"]
