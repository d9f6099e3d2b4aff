"""CIFAR-10 and CIFAR-100 from the python pickles, read by nni-bio's own (safe) reader.

Expected layout (the extracted ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``)::

    <data_dir>/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch  (batches.meta optional)
    <data_dir>/cifar-100-python/train, test                                   (meta optional)

torchvision's ``CIFAR10`` MD5-checks every file and so rejects anything but the official files;
this reader validates the structure instead and *reports* whether the MD5s match
(``nni-bio data check cifar10``). Splits: ``train``/``val`` is a seeded, stratified 45,000 / 5,000
hold-out of the 50,000 training images (10 %, whatever the size of the copy); ``test`` is the
test file. Train augmentation: RandomCrop(32, padding=4) + horizontal flip.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from nni_bio.data import checksums
from nni_bio.data._api import dataset_info
from nni_bio.data.arrays import planes_to_nchw, split_dataset
from nni_bio.data.batches import read_batch, read_names, stack_batches
from nni_bio.data.locate import candidates, find_folder
from nni_bio.data.report import DataReport
from nni_bio.data.splits import holdout_split, val_size_for
from nni_bio.data.transforms import standard_transform

ROW_WIDTH = 3 * 32 * 32
VAL_FRACTION = 0.1  # 5,000 of 50,000


@dataclass(frozen=True)
class Cifar:
    """One CIFAR variant: where its files are, how they are keyed, and build/check/where."""

    name: str
    subdir: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    names_key: str
    label_keys: tuple[str, ...]
    num_classes: int
    official_sizes: tuple[int, int]
    archive: str
    optional_labels: tuple[tuple[str, int, int], ...] = ()

    def where(self, data_dir: Path | None) -> list[Path]:
        return candidates(data_dir, [self.subdir])

    def locate(self, data_dir: Path | None) -> Path:
        return find_folder(self.name, data_dir, [self.subdir], self.train_files + self.test_files,
                           how_to_get=f"Extract the official {self.archive} into DIR to get {self.subdir}/.")

    def _read(self, folder: Path, files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        extra = {k: (lo, hi) for k, lo, hi in self.optional_labels}
        parts = [read_batch(folder / f, row_width=ROW_WIDTH, label_keys=self.label_keys, low=0,
                            high=self.num_classes - 1, optional_labels=extra) for f in files]
        data, labels = stack_batches(parts, ROW_WIDTH)
        return planes_to_nchw(data, 3, 32), labels

    def class_names(self, folder: Path) -> list[str]:
        meta = folder / self.meta_file
        return read_names(meta, self.names_key, self.num_classes) if meta.is_file() else []

    def read(self, data_dir: Path | None) -> tuple[Path, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """``(folder, (train images NCHW, labels), (test images, labels))``, validated."""
        folder = self.locate(data_dir)
        return folder, self._read(folder, self.train_files), self._read(folder, self.test_files)

    def build(self, split: str, data_dir: Path | None, augment: bool, seed: int, *, normalize: bool = True,
              cutout: int = 0) -> Dataset:
        info = dataset_info(self.name)
        folder, train, test = self.read(data_dir)
        transform = standard_transform(augment=augment, crop_padding=4, flip=True, mean=info.mean, std=info.std,
                                       normalize=normalize, cutout=cutout)
        return split_dataset(split, train, test, val_size=val_size_for(len(train[1]), VAL_FRACTION), seed=seed,
                             transform=transform, classes=self.class_names(folder), root=str(folder))

    def check(self, data_dir: Path | None) -> DataReport:
        folder, (_, y_train), (_, y_test) = self.read(data_dir)
        names = self.class_names(folder)
        train_idx, val_idx = holdout_split(y_train, val_size_for(len(y_train), VAL_FRACTION), 0)
        files = self.train_files + self.test_files + (self.meta_file,)
        status = checksums.compare(self.name, checksums.digests_of(folder, files))
        notes = [] if names else [f"no {self.meta_file} (optional): class names unknown"]
        if (len(y_train), len(y_test)) != self.official_sizes:
            notes.append(f"{len(y_train):,} training / {len(y_test):,} test images; the official set has "
                         f"{self.official_sizes[0]:,} / {self.official_sizes[1]:,}")
        return DataReport(self.name, str(folder), {"train": len(train_idx), "val": len(val_idx), "test": len(y_test)},
                          len(np.unique(np.concatenate([y_train, y_test]))), status.summary, status.genuine, notes)


CIFAR10 = Cifar("cifar10", "cifar-10-batches-py", tuple(f"data_batch_{k}" for k in range(1, 6)), ("test_batch",),
                "batches.meta", "label_names", ("labels",), 10, (50_000, 10_000), "cifar-10-python.tar.gz")
CIFAR100 = Cifar("cifar100", "cifar-100-python", ("train",), ("test",), "meta", "fine_label_names",
                 ("fine_labels",), 100, (50_000, 10_000), "cifar-100-python.tar.gz",
                 optional_labels=(("coarse_labels", 0, 19),))

__all__ = ["CIFAR10", "CIFAR100", "Cifar"]
