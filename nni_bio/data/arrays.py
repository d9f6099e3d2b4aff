"""``ArrayDataset``: a data set held in memory as one uint8 array, converted to float per item.

CIFAR-10's 50,000 training images are 150 MB as uint8 and would be 600 MB as float32, so images
stay uint8 (N x C x H x W, RGB planes in that order) and each ``__getitem__`` converts one image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


class ArrayDataset(Dataset):
    """``(transform(images[i]), int(labels[i]))`` for uint8 ``images`` of shape N x C x H x W.

    Attributes:
        images: the uint8 numpy array (N, C, H, W).
        labels: int64 numpy array (N,).
        targets: the labels as a list of ints (torchvision convention).
        indices: for a train/val split, the row of each sample in the concatenated training files.
        classes: class names, when the files have them.
        root: the folder the data was read from.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable[[np.ndarray], torch.Tensor], *,
                 indices: np.ndarray | None = None, classes: Sequence[str] = (), root: str = ""):
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 N x C x H x W, got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = np.ascontiguousarray(images)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.indices = np.arange(len(labels)) if indices is None else np.asarray(indices)
        self.classes = list(classes)
        self.root = root

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), int(self.labels[i])

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.images.shape[1:]))
        return f"{type(self).__name__}({len(self)} images {shape}, root={self.root!r}, transform={self.transform!r})"


def planes_to_nchw(rows: np.ndarray, channels: int, size: int) -> np.ndarray:
    """CIFAR row layout (all R values, then G, then B; each plane row-major) to N x C x H x W, no copy."""
    return rows.reshape(-1, channels, size, size)


def split_dataset(split: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], *,
                  val_size: int, seed: int, transform: Callable, classes: Sequence[str] = (),
                  root: str = "") -> ArrayDataset:
    """The ``train``/``val`` hold-out of the ``train`` arrays, all of them (``train+val``), or the
    ``test`` arrays, as an ArrayDataset."""
    from nni_bio.data.splits import holdout_split

    if split == "test":
        images, labels = test
        return ArrayDataset(images, labels, transform, classes=classes, root=root)
    images, labels = train
    if split == "train+val":
        return ArrayDataset(images, labels, transform, classes=classes, root=root)
    train_idx, val_idx = holdout_split(labels, val_size, seed)
    idx = train_idx if split == "train" else val_idx
    return ArrayDataset(images[idx], labels[idx], transform, indices=idx, classes=classes, root=root)
