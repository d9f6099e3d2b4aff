"""The DARTS genotype and the final DARTS network built from it (pure PyTorch: no NNI import).

The search space itself is :class:`nni_bio.search_spaces.darts.DartsSpace` (NNI); this module holds
what a trained or shipped architecture needs: :func:`build_network` (DARTS' ``NetworkCIFAR`` with
rule-aware ops) and :data:`BIODARTS`. The plain-data genotype format below, the candidate lists and the
cells are :mod:`nni_bio.search_spaces.darts_cells`, which the ImageNet network shares.

A genotype is JSON::

    {"space": "darts",
     "args": {constructor arguments of DartsSpace},
     "sample": {"normal/op_2_0": "skip_connect", "normal/input_2_0": [0], ...},
     "normal": [["skip_connect", 0], ["skip_connect", 1], ["sep_conv_3x3@frsf", 1], ...],
     "normal_concat": [2, 3, 4, 5],
     "reduce": [["max_pool_3x3", 0], ["skip_connect@usf", 1], ...],
     "reduce_concat": [2, 3, 4, 5]}

``normal``/``reduce`` list two ``[candidate, input_node]`` pairs per intermediate node, node 2
first; nodes 0 and 1 are the cell inputs c_{k-2} and c_{k-1}. A candidate without ``@rule``
(``max_pool_3x3``, ``skip_connect``) uses ``args["fixed_rule"]`` wherever it has weights (a
stride-2 ``skip_connect``). The stem, the cell-input preprocessing (ReLU-Conv-BN 1x1,
FactorizedReduce), the classifier and the auxiliary head use ``args["fixed_rule"]`` too.

**Presets** (``args["preset"]``, see :data:`~nni_bio.search_spaces.darts_cells.PRESETS`) name the two settings of those layers:

* ``bio`` (default): ``fixed_rule`` is a bio rule (``usf`` unless given), so no layer anywhere
  learns by backprop.
* ``reference``: the reference code's setting (``paper-digest.md`` §3.2): the stem, the
  cell-input preprocessing, every stride-2 ``skip_connect`` (FactorizedReduce, whatever its
  ``@rule``: the reference dropped the converted layers), the classifier and the auxiliary head
  learn by backprop (``fixed_rule="backprop"``); only the cell ops use bio rules.

Without ``preset``, ``fixed_rule="backprop"`` means ``reference`` and any other rule ``bio``;
:func:`~nni_bio.search_spaces.darts_cells.with_preset` switches a genotype. ``build_network(..., network="imagenet")`` builds DARTS'
``NetworkImageNet`` instead (:mod:`nni_bio.search_spaces.darts_imagenet`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from nni_bio.core._registry import get_rule
from nni_bio.nas.candidates import parse_candidate
from nni_bio.nas.ops import check_op
from nni_bio.search_spaces.darts_cells import (CELL_TYPES, NETWORKS, SPACE, AuxiliaryHead, GenotypeError, export_genotype,
                                               full_args, labels, stack_cells)
from nni_bio.search_spaces.darts_imagenet import DartsImageNetNetwork


class DartsNetwork(nn.Module):
    """DARTS' ``NetworkCIFAR`` for a genotype: stem, ``num_cells`` cells (reductions at L//3 and
    2L//3), optional auxiliary head after cell 2L//3, global pooling, classifier.

    Attributes:
        drop_path_prob: drop-path probability used by :meth:`forward` in training mode (set it
            from an epoch schedule); Identity ops are never dropped.
        genotype: the genotype the network was built from.
        preset: ``"bio"`` or ``"reference"`` (:data:`~nni_bio.search_spaces.darts_cells.PRESETS`).
    """

    def __init__(self, genotype: Mapping[str, Any], *, width: int, num_cells: int, auxiliary: bool = False,
                 drop_path_prob: float = 0.0, num_classes: int | None = None, in_channels: int | None = None):
        super().__init__()
        args = full_args(genotype.get("args"))
        num_classes = args["num_classes"] if num_classes is None else num_classes
        in_channels = args["in_channels"] if in_channels is None else in_channels
        rule = args["fixed_rule"]
        self.genotype, self.preset = dict(genotype), args["preset"]
        self.num_cells, self.auxiliary, self.drop_path_prob = num_cells, auxiliary, drop_path_prob
        self._aux_index = 2 * num_cells // 3
        C_curr = args["stem_multiplier"] * width
        self.stem = nn.Sequential(get_rule(rule).conv2d(in_channels, C_curr, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(C_curr))
        self.cells, C_prev, C_aux = stack_cells(genotype, width, num_cells, C_curr, C_curr, reduction_prev=False,
                                                fixed_rule=rule, preset=self.preset)
        self.auxiliary_head = AuxiliaryHead(C_aux, num_classes, rule=rule) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = get_rule(rule).linear(C_prev, num_classes)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        logits_aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self._aux_index and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        if logits_aux is not None:
            return logits, logits_aux
        return logits


def build_network(genotype: Mapping[str, Any], *, width: int | None = None, num_cells: int | None = None,
                  auxiliary: bool = False, drop_path_prob: float = 0.0, num_classes: int | None = None,
                  in_channels: int | None = None, network: str = "cifar") -> nn.Module:
    """The final DARTS network of ``genotype``.

    ``network="cifar"``: DARTS' ``NetworkCIFAR`` (default C=36, 20 cells); ``"imagenet"``: DARTS'
    ``NetworkImageNet`` (default C=48, 14 cells; two stride-2 stems, ImageNet auxiliary head; see
    :mod:`nni_bio.search_spaces.darts_imagenet`). ``nni-bio train --dataset imagenet`` picks it.
    In training mode with ``auxiliary=True`` it returns ``(logits, aux_logits)``, else logits.
    ``num_classes``/``in_channels`` default to the genotype's ``args``.

    Example:
        >>> import torch
        >>> from nni_bio.search_spaces.darts_net import BIODARTS, build_network
        >>> net = build_network(BIODARTS, width=4, num_cells=3)
        >>> net(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """
    if genotype.get("space", SPACE) != SPACE:
        raise GenotypeError(f"genotype is for space {genotype.get('space')!r}, not {SPACE!r}")
    if "normal" not in genotype or "reduce" not in genotype:
        genotype = {**export_genotype(genotype["sample"], genotype.get("args")), **genotype}
    for cell_type in CELL_TYPES:
        for name, _ in genotype[cell_type]:
            check_op(parse_candidate(name)[0])
    if network not in NETWORKS:
        raise GenotypeError(f"unknown DARTS network {network!r}: use one of {', '.join(NETWORKS)}")
    width = NETWORKS[network][0] if width is None else width
    num_cells = NETWORKS[network][1] if num_cells is None else num_cells
    if network == "imagenet":
        return DartsImageNetNetwork(genotype, width=width, num_cells=num_cells, auxiliary=auxiliary,
                                    drop_path_prob=drop_path_prob, num_classes=num_classes, in_channels=in_channels)
    return DartsNetwork(genotype, width=width, num_cells=num_cells, auxiliary=auxiliary,
                        drop_path_prob=drop_path_prob, num_classes=num_classes, in_channels=in_channels)


def _biodarts() -> dict[str, Any]:
    # imanehmz/LR-NAS genotypes.BIODARTS (= BIODARTS2), in nni-bio names: skip_connect_* is Identity in
    # normal cells (-> skip_connect) and a stride-2 FactorizedReduce in the reduction cell
    # (skip_connect_u -> skip_connect@usf, now with real uSF convs); sep_conv_3x3_fr -> sep_conv_3x3@frsf, ...
    normal = [("skip_connect", 0), ("skip_connect", 1), ("sep_conv_3x3@frsf", 1), ("sep_conv_3x3@usf", 2),
              ("sep_conv_3x3@usf", 0), ("skip_connect", 1), ("sep_conv_3x3@frsf", 1), ("max_pool_3x3", 0)]
    reduce = [("max_pool_3x3", 0), ("skip_connect@usf", 1), ("max_pool_3x3", 0), ("max_pool_3x3", 1),
              ("max_pool_3x3", 0), ("max_pool_3x3", 1), ("max_pool_3x3", 0), ("dil_conv_5x5@usf", 3)]
    sample: dict[str, Any] = {}
    for cell_type, edges in (("normal", normal), ("reduce", reduce)):
        for (op_label, input_label), (op, j) in zip(labels(4, cell_type), edges):
            sample[op_label], sample[input_label] = op, [j]
    return export_genotype(sample, {"reduce_skip_rules": True})


#: The reference genotype of the paper's code (BIODARTS), in nni-bio names, with the search-space
#: arguments it belongs to (``reduce_skip_rules=True``). Retrain with ``build_network(BIODARTS)``.
BIODARTS: dict[str, Any] = _biodarts()

__all__ = ["BIODARTS", "DartsNetwork", "build_network"]
