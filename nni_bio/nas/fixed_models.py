"""Fixed networks for final training and baselines: one learning rule everywhere, or a rule map.

Plain PyTorch (no NNI import). Every conv/linear layer is a rule layer; the network is built with
``backprop`` and then given its rules with :func:`nni_bio.swap_rule`, so a rule map's patterns are
fnmatch patterns over the module names below (``nni-bio train --model NAME --print-layers``).

=============  =================================================================================
``tiny-cnn``   conv3x3(w) -> BN -> ReLU -> conv3x3(w) -> BN -> ReLU -> avg-pool 2 -> linear.
               The ``tiny`` search space's CNN with conv_3x3 in both slots (w = 16).
``small-cnn``  two VGG stages, conv3x3(w) x2 -> max-pool 2 -> conv3x3(2w) x2 -> max-pool 2, BN and
               ReLU after every conv, then a linear classifier (w = 32): Fashion-MNIST > 90 %.
``lenet``      LeNet-5 style: conv5x5(6) -> pool -> conv5x5(16) -> pool -> 120 -> 84 -> classes,
               with BatchNorm after the convs and padding 2 (works from 8x8 digits to 32x32).
``resnetD``    ResNet-D for D = 6n+2 (``resnet20``, ``resnet32``, ``resnet56``, ...): CIFAR layout,
               widths w, 2w, 4w (w = 16), 1x1 projection shortcuts; the ``rule_per_layer`` space's
               layout with one rule everywhere.
=============  =================================================================================

Example:
    >>> import torch
    >>> from nni_bio.nas.fixed_models import build_fixed_model
    >>> net = build_fixed_model("tiny-cnn", in_channels=1, num_classes=10, image_size=8, rule="usf")
    >>> net(torch.randn(2, 1, 8, 8)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from nni_bio.core._registry import get_rule
from nni_bio.core.errors import NniBioError
from nni_bio.core.swap import swap_rule

_BP = "backprop"


def _conv(c_in: int, c_out: int, k: int, stride: int = 1) -> nn.Module:
    return get_rule(_BP).conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False)


def _conv_bn_relu(c_in: int, c_out: int, k: int = 3) -> list[nn.Module]:
    return [_conv(c_in, c_out, k), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def tiny_cnn(in_channels: int, num_classes: int, image_size: int, width: int = 16) -> nn.Module:
    return nn.Sequential(*_conv_bn_relu(in_channels, width), *_conv_bn_relu(width, width), nn.AvgPool2d(2),
                         nn.Flatten(), get_rule(_BP).linear(width * (image_size // 2) ** 2, num_classes))


def small_cnn(in_channels: int, num_classes: int, image_size: int, width: int = 32) -> nn.Module:
    w = width
    return nn.Sequential(*_conv_bn_relu(in_channels, w), *_conv_bn_relu(w, w), nn.MaxPool2d(2),
                         *_conv_bn_relu(w, 2 * w), *_conv_bn_relu(2 * w, 2 * w), nn.MaxPool2d(2),
                         nn.Flatten(), get_rule(_BP).linear(2 * w * (image_size // 4) ** 2, num_classes))


def lenet(in_channels: int, num_classes: int, image_size: int, width: int = 6) -> nn.Module:
    c1, c2, r = width, 16 * width // 6, get_rule(_BP)
    side = image_size // 4
    return nn.Sequential(
        r.conv2d(in_channels, c1, 5, padding=2, bias=False), nn.BatchNorm2d(c1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        r.conv2d(c1, c2, 5, padding=2, bias=False), nn.BatchNorm2d(c2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(), r.linear(c2 * side * side, 120), nn.ReLU(inplace=True), r.linear(120, 84), nn.ReLU(inplace=True),
        r.linear(84, num_classes),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; a 1x1 projection (+BN) shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = _conv(c_in, c_out, 3, stride), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = _conv(c_out, c_out, 3), nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(_conv(c_in, c_out, 1, stride), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet-(6n+2), CIFAR layout (He et al. 2016, section 4.2)."""

    def __init__(self, depth: int, in_channels: int, num_classes: int, width: int = 16):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise NniBioError(f"ResNet depth must be 6n+2 (8, 14, 20, 32, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.stem, self.bn = _conv(in_channels, width, 3), nn.BatchNorm2d(width)
        blocks, c_in = [], width
        for stage in range(3):
            c_out = width * 2**stage
            for b in range(n):
                blocks.append(BasicBlock(c_in, c_out, 2 if stage > 0 and b == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = get_rule(_BP).linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(torch.relu(self.bn(self.stem(x))))
        return self.fc(x.mean((2, 3)))


FIXED_MODELS: dict[str, Callable[..., nn.Module]] = {"tiny-cnn": tiny_cnn, "small-cnn": small_cnn, "lenet": lenet}
_RESNET = re.compile(r"^resnet(\d+)$")


def fixed_model_names() -> list[str]:
    return [*FIXED_MODELS, "resnet20", "resnet32", "resnet56 (any resnet<6n+2>)", "timm:<any timm model>"]


def build_fixed_model(name: str, *, in_channels: int, num_classes: int, image_size: int, width: int | None = None,
                      rule: str = _BP, rule_map: Mapping[str, str] | None = None,
                      model_args: Mapping[str, Any] | None = None) -> nn.Module:
    """Build fixed network ``name`` with ``rule`` in every layer, then ``rule_map`` (fnmatch
    pattern over module names -> rule; first match wins) on top.

    Raises:
        NniBioError: unknown name (with a did-you-mean) or impossible depth.
    """
    options = {} if width is None else {"width": width}
    match = _RESNET.match(name)
    if name.startswith("timm:"):  # nni_bio.core.timm_models: any timm model, its layers converted
        from nni_bio.core.timm_models import build_timm

        if width is not None:
            raise NniBioError(f"{name}: --width applies to nni-bio's own models; pass a timm argument in model_args")
        model = build_timm(name, in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                           model_args=model_args)
    elif model_args:
        raise NniBioError(f"model_args apply to timm: models only, not {name!r}")
    elif match:
        model: nn.Module = ResNet(int(match.group(1)), in_channels, num_classes, **options)
    elif name in FIXED_MODELS:
        model = FIXED_MODELS[name](in_channels, num_classes, image_size, **options)
    else:
        close = difflib.get_close_matches(name, [*FIXED_MODELS, "resnet20"], n=2)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise NniBioError(f"unknown model {name!r}.{hint} Available: {', '.join(fixed_model_names())}")
    if rule != _BP:
        swap_rule(model, rule)
    if rule_map:
        unmatched = [p for p in rule_map if not any(fnmatch.fnmatchcase(n, p) for n, _ in model.named_modules())]
        if unmatched:
            raise NniBioError(f"rule-map patterns {unmatched} match no layer of {name!r}; layer names: "
                              f"{', '.join(n for n, m in model.named_modules() if hasattr(m, 'rule_name'))}")
        swap_rule(model, dict(rule_map))
    return model


__all__ = ["FIXED_MODELS", "ResNet", "build_fixed_model", "fixed_model_names"]
