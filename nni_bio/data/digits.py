"""scikit-learn's handwritten digits (8x8, 10 classes, 1,797 images), bundled with scikit-learn.

Fixed stratified split (seeded): 1,000 train / 400 validation / 397 test. No standard augmentation
(8x8 images); pixels are scaled to [0, 1] and not normalised (``DatasetInfo.mean`` is None), so
``normalize`` changes nothing. ``cutout`` applies on augmented splits like for the other data sets.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from nni_bio.data.report import DataReport

TEST_SIZE, VAL_SIZE = 397, 400


def _split_indices(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=TEST_SIZE, stratify=labels, random_state=0)
    train, val = train_test_split(rest, test_size=VAL_SIZE, stratify=labels[rest], random_state=seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test), "train+val": np.sort(rest)}


class DigitsDataset(TensorDataset):
    """One split of the digits data: float images in [0, 1] of shape (1, 8, 8), int labels.

    The test split is fixed; ``seed`` only changes how the rest divides into train and val.
    """

    def __init__(self, split: str, seed: int = 0, transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        from sklearn.datasets import load_digits

        self.transform = transform
        bunch = load_digits()
        idx = _split_indices(bunch.target, seed)[split]
        images = torch.tensor(bunch.images[idx] / 16.0, dtype=torch.float32).unsqueeze(1)
        super().__init__(images, torch.tensor(bunch.target[idx], dtype=torch.int64))

    def __getitem__(self, i: int):
        x, y = super().__getitem__(i)
        return (x if self.transform is None else self.transform(x)), int(y)


def build(split: str, data_dir: Path | None, augment: bool, seed: int, *, normalize: bool = True,
          cutout: int = 0) -> DigitsDataset:
    from nni_bio.data.transforms import Cutout

    return DigitsDataset(split, seed=seed, transform=Cutout(cutout) if augment and cutout else None)


def where(data_dir: Path | None) -> list[Path]:
    from sklearn import datasets

    return [Path(datasets.__file__).parent / "data" / "digits.csv.gz"]


def locate(data_dir: Path | None) -> Path:
    return where(data_dir)[0]


def check(data_dir: Path | None) -> DataReport:
    from sklearn.datasets import load_digits

    sizes = {split: len(idx) for split, idx in _split_indices(load_digits().target, 0).items() if split != "train+val"}
    return DataReport("digits", str(where(data_dir)[0]), sizes, 10, "bundled with scikit-learn (not checked)")
