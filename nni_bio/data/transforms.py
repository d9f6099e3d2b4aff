"""Per-item transforms: padded random crop, flip, scaling to [0, 1], normalisation, Cutout.

:class:`ImageTransform` takes one ``uint8`` CxHxW numpy image (a row of the in-memory array) and
does all its work in numpy with one random draw from torch's global generator, about 20 us per
CIFAR image with everything on (the same steps as torch ops on a tensor cost ~70 us), so a
50k-image data set can stay uint8 and convert item by item. Using torch's generator, like
torchvision's transforms, means ``torch.manual_seed`` and DataLoader worker seeding apply.

Standard augmentation (docs/data.md §2.5, NAS-Bench-201 / xautodl conventions):

=================  ======================================================
cifar10, cifar100  RandomCrop(32, padding=4) + horizontal flip
imagenet16-120     horizontal flip + RandomCrop(16, padding=2)
fashion-mnist      RandomCrop(28, padding=2) + horizontal flip (clothes are left/right symmetric)
=================  ======================================================
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def cutout_box(cy: int, cx: int, length: int, h: int, w: int) -> tuple[slice, slice]:
    """Rows and columns of a ``length`` square centred at (cy, cx), clipped to the image."""
    half = length // 2
    return slice(max(cy - half, 0), min(cy + half, h)), slice(max(cx - half, 0), min(cx + half, w))


class Cutout:
    """Zero a ``length`` x ``length`` square at a random centre (clipped at the borders), DARTS style.

    Applied to a float CxHxW tensor, after normalisation.
    """

    def __init__(self, length: int):
        self.length = int(length)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.length <= 0:
            return x
        h, w = x.shape[-2:]
        ry, rx = torch.rand(2).tolist()
        rows, cols = cutout_box(int(ry * h), int(rx * w), self.length, h, w)
        x = x.clone()
        x[..., rows, cols] = 0
        return x

    def __repr__(self) -> str:
        return f"Cutout(length={self.length})"


class ImageTransform:
    """uint8 CxHxW numpy image -> float32 CxHxW tensor: padded crop, flip, /255, normalise, Cutout.

    Args:
        crop_padding: zero padding for a random crop back to the original size (0: no crop).
        flip: random horizontal flip with probability 1/2.
        mean, std: per-channel normalisation of the [0, 1] image; None leaves it in [0, 1].
        cutout: side of the Cutout square, zeroed after normalisation (0: none).
    """

    def __init__(self, *, crop_padding: int = 0, flip: bool = False, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, cutout: int = 0):
        self.crop_padding, self.flip, self.cutout = int(crop_padding), bool(flip), int(cutout)
        self.normalized = mean is not None
        self._mean = None if mean is None else np.asarray(mean, np.float32).reshape(-1, 1, 1)
        self._std = None if std is None else np.asarray(std, np.float32).reshape(-1, 1, 1)

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        img = np.asarray(img)
        c, h, w = img.shape
        p = self.crop_padding
        r = torch.rand(5).tolist() if (p or self.flip or self.cutout) else None
        if p:
            # the crop window starts at (i, j) in the padded image, i.e. at (i - p, j - p) in the original
            di, dj = int(r[0] * (2 * p + 1)) - p, int(r[1] * (2 * p + 1)) - p
            y0, y1, x0, x1 = max(di, 0), min(di + h, h), max(dj, 0), min(dj + w, w)
            out = np.zeros_like(img)
            out[:, y0 - di:y1 - di, x0 - dj:x1 - dj] = img[:, y0:y1, x0:x1]
            img = out
        if self.flip and r[2] < 0.5:
            img = img[:, :, ::-1]
        x = img.astype(np.float32)
        x /= 255  # same float32 values as torchvision's ToTensor (and Normalize below)
        if self._mean is not None:
            x -= self._mean
            x /= self._std
        if self.cutout:
            rows, cols = cutout_box(int(r[3] * h), int(r[4] * w), self.cutout, h, w)
            x[:, rows, cols] = 0
        return torch.from_numpy(x)

    def __repr__(self) -> str:
        return (f"ImageTransform(crop_padding={self.crop_padding}, flip={self.flip}, normalize={self.normalized}, "
                f"cutout={self.cutout})")


def standard_transform(*, augment: bool, crop_padding: int, flip: bool, mean: Sequence[float] | None,
                       std: Sequence[float] | None, normalize: bool, cutout: int) -> ImageTransform:
    """The transform ``get_dataset`` uses: augmentation and Cutout only when ``augment`` is on."""
    return ImageTransform(crop_padding=crop_padding if augment else 0, flip=flip and augment,
                          mean=mean if normalize else None, std=std if normalize else None,
                          cutout=cutout if augment else 0)
