"""DARTS' ImageNet network (``NetworkImageNet``) for any DARTS genotype, with rule-aware layers.

As in DARTS (Liu et al. 2019, ``cnn/model.py``) and the reference code's ``train_imagenet.py``:

* ``stem0``: conv 3x3 stride 2 (3 -> C/2), BN, ReLU, conv 3x3 stride 2 (C/2 -> C), BN;
  ``stem1``: ReLU, conv 3x3 stride 2 (C -> C), BN. A 224 px image reaches the cells at 28x28.
* the cells of :func:`~nni_bio.search_spaces.darts_cells.stack_cells` (reductions at L//3 and
  2L//3); the first cell reduces its c_{k-2} input (``stem0``'s 56x56 output), as after a reduction.
* the ImageNet auxiliary head after cell 2L//3 (:class:`AuxiliaryHeadImageNet`), global average
  pooling (DARTS' ``AvgPool2d(7)`` over the final 7x7 map at 224 px; adaptive here, the same there)
  and the classifier.

Every conv and linear layer is a rule layer: the cell ops use their genotype's rules, everything
else ``args["fixed_rule"]`` (the ``bio`` preset: a bio rule; ``reference``: backprop). The DARTS
ImageNet recipe (C=48, 14 cells, label smoothing 0.1, SGD lr 0.1, step decay 0.97 per epoch, ...)
is in the README under "Final training".

Example:
    >>> import torch
    >>> from nni_bio.search_spaces.darts_net import BIODARTS, build_network
    >>> net = build_network(BIODARTS, width=4, num_cells=3, network="imagenet", num_classes=5)
    >>> net(torch.randn(2, 3, 64, 64)).shape
    torch.Size([2, 5])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from nni_bio.core._registry import get_rule
from nni_bio.search_spaces.darts_cells import full_args, stack_cells


class AuxiliaryHeadImageNet(nn.Module):
    """DARTS' ImageNet auxiliary tower with rule layers.

    Its input is the output of cell 2L//3 (the second reduction: 7x7 at 224 px), pooled by a 5x5
    stride-2 average pool to 2x2; at other sizes an adaptive pool to 2x2 takes its place. As in
    DARTS' released code there is no BatchNorm after the 768-channel conv (left out there "for
    consistency with the experiments in the paper").
    """

    def __init__(self, C: int, num_classes: int, *, rule: str):
        super().__init__()
        r = get_rule(rule)
        self.features = nn.Sequential(
            r.conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            r.conv2d(128, 768, 2, bias=False), nn.ReLU(inplace=True),
        )
        self.classifier = r.linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(x)
        if x.shape[-2:] == (7, 7):
            x = nn.functional.avg_pool2d(x, 5, stride=2, padding=0, count_include_pad=False)
        else:
            x = nn.functional.adaptive_avg_pool2d(x, 2)
        return self.classifier(self.features(x).flatten(1))


class DartsImageNetNetwork(nn.Module):
    """DARTS' ``NetworkImageNet`` for a genotype (module docstring); build it with
    ``build_network(genotype, network="imagenet")``.

    Attributes:
        drop_path_prob: drop-path probability in training mode (DARTS' ImageNet recipe: 0).
        genotype: the genotype the network was built from.
        preset: ``"bio"`` or ``"reference"``.
    """

    def __init__(self, genotype: Mapping[str, Any], *, width: int = 48, num_cells: int = 14, auxiliary: bool = False,
                 drop_path_prob: float = 0.0, num_classes: int | None = None, in_channels: int | None = None):
        super().__init__()
        args = full_args(genotype.get("args"))
        num_classes = args["num_classes"] if num_classes is None else num_classes
        in_channels = args["in_channels"] if in_channels is None else in_channels
        rule = args["fixed_rule"]
        r = get_rule(rule)
        self.genotype, self.preset = dict(genotype), args["preset"]
        self.num_cells, self.auxiliary, self.drop_path_prob = num_cells, auxiliary, drop_path_prob
        self._aux_index = 2 * num_cells // 3
        C = width
        self.stem0 = nn.Sequential(
            r.conv2d(in_channels, C // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=True),
            r.conv2d(C // 2, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),  # DARTS' in-place ReLU also rectified s0; the cell's ReLU does that here
            r.conv2d(C, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C),
        )
        self.cells, C_prev, C_aux = stack_cells(genotype, width, num_cells, C, C, reduction_prev=True,
                                                fixed_rule=rule, preset=self.preset)
        self.auxiliary_head = AuxiliaryHeadImageNet(C_aux, num_classes, rule=rule) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = r.linear(C_prev, num_classes)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        logits_aux = None
        s0 = self.stem0(x)
        s1 = self.stem1(s0)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self._aux_index and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        if logits_aux is not None:
            return logits, logits_aux
        return logits


__all__ = ["AuxiliaryHeadImageNet", "DartsImageNetNetwork"]
