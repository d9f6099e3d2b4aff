"""scikit-learn's handwritten digits (8x8, 10 classes, 1,797 images), bundled with scikit-learn.

Fixed stratified split (seeded): 1,000 train / 400 validation / 397 test. No standard augmentation
(8x8 images); pixels are scaled to [0, 1] and not normalised (``DatasetInfo.mean`` is None), so
``normalize`` changes nothing. ``cutout`` applies on augmented splits like for the other data sets.
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from nni_bio.data.report import DataReport

TEST_SIZE, VAL_SIZE = 397, 400


def _split_indices(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    index = np.arange(len(labels))
    rest, test = stratified_split(index, labels, TEST_SIZE, 0)
    train, val = stratified_split(rest, labels[rest], VAL_SIZE, seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test), "train+val": np.sort(rest)}


def stratified_split(items: np.ndarray, labels: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``sklearn.model_selection.train_test_split(items, test_size=n_test, stratify=labels, random_state=seed)``
    (scikit-learn 1.x's StratifiedShuffleSplit, draw for draw), without importing scikit-learn: that import
    is a tenth of a digits trial's start-up. ``tests/test_startup_imports.py`` checks it against scikit-learn."""
    rng = np.random.RandomState(seed)
    classes, y_indices, class_counts = np.unique(labels, return_inverse=True, return_counts=True)
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    n_train = len(labels) - n_test
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i in range(len(classes)):
        permuted = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(permuted[:n_i[i]])
        test.extend(permuted[n_i[i]:n_i[i] + t_i[i]])
    return items[rng.permutation(train)], items[rng.permutation(test)]


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """scikit-learn's ``utils.extmath._approximate_mode``: per-class counts of a stratified draw, ties
    broken by ``rng``."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float64 in 0..16, labels (1797,) int): what ``sklearn.datasets.load_digits``
    returns, read from the same bundled file without importing scikit-learn."""
    with gzip.open(locate(None), mode="rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


class DigitsDataset(TensorDataset):
    """One split of the digits data: float images in [0, 1] of shape (1, 8, 8), int labels.

    The test split is fixed; ``seed`` only changes how the rest divides into train and val.
    """

    def __init__(self, split: str, seed: int = 0, transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.transform = transform
        all_images, labels = load_digits_arrays()
        idx = _split_indices(labels, seed)[split]
        images = torch.tensor(all_images[idx] / 16.0, dtype=torch.float32).unsqueeze(1)
        super().__init__(images, torch.tensor(labels[idx], dtype=torch.int64))

    def __getitem__(self, i: int):
        x, y = super().__getitem__(i)
        return (x if self.transform is None else self.transform(x)), int(y)


def build(split: str, data_dir: Path | None, augment: bool, seed: int, *, normalize: bool = True,
          cutout: int = 0) -> DigitsDataset:
    from nni_bio.data.transforms import Cutout

    return DigitsDataset(split, seed=seed, transform=Cutout(cutout) if augment and cutout else None)


def where(data_dir: Path | None) -> list[Path]:
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        from nni_bio.data._api import DataError

        raise DataError("the digits data set ships with scikit-learn, which is not installed: pip install scikit-learn")
    return [Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"]


def locate(data_dir: Path | None) -> Path:
    return where(data_dir)[0]


def check(data_dir: Path | None) -> DataReport:
    sizes = {split: len(idx) for split, idx in _split_indices(load_digits_arrays()[1], 0).items()
             if split != "train+val"}
    return DataReport("digits", str(where(data_dir)[0]), sizes, 10, "bundled with scikit-learn (not checked)")
