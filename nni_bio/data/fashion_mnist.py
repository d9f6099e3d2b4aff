"""Fashion-MNIST (Zalando; 28x28 grey, 10 classes, 60,000 train / 10,000 test) from IDX files.

Looked for, in order::

    <data_dir>/fashion-mnist/          {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    <data_dir>/FashionMNIST/raw/       (torchvision's layout)
    /usr/share/datasets/fashion-mnist/ (Debian: apt-get install dataset-fashion-mnist)

Files may be gzip-compressed or not (decided by content). Debian re-compressed the published
``.gz`` files, so their MD5s differ from the published ones; the check compares the decompressed
content instead. Splits: ``train``/``val`` is a seeded, stratified 55,000 / 5,000 hold-out of the
training file (1/12 of it); ``test`` is ``t10k``. Train augmentation: RandomCrop(28, padding=2) +
horizontal flip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from nni_bio.data import checksums
from nni_bio.data._api import DataError, dataset_info
from nni_bio.data.arrays import split_dataset
from nni_bio.data.idx import parse_idx, read_bytes
from nni_bio.data.locate import candidates, find_folder
from nni_bio.data.report import DataReport
from nni_bio.data.splits import holdout_split, val_size_for
from nni_bio.data.transforms import standard_transform

NAME = "fashion-mnist"
SUBDIRS = ("fashion-mnist", "FashionMNIST/raw")
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
VAL_FRACTION = 1 / 12  # 5,000 of 60,000
OFFICIAL_SIZES = (60_000, 10_000)


def _file(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` or ``folder/stem.gz``, whichever exists (uncompressed first)."""
    return next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)


def where(data_dir: Path | None) -> list[Path]:
    return candidates(data_dir, SUBDIRS, [DEBIAN_DIR])


def locate(data_dir: Path | None) -> Path:
    stems = [s for pair in FILES.values() for s in pair]
    return find_folder(NAME, data_dir, SUBDIRS, stems, fixed=[DEBIAN_DIR],
                       exists=lambda folder, stem: _file(folder, stem) is not None,
                       how_to_get="Each file may end in .gz. On Debian/Ubuntu, "
                                  f"`apt-get install dataset-fashion-mnist` puts them in {DEBIAN_DIR}.")


def read_pair(folder: Path, split: str, payloads: dict[str, bytes] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images N x 1 x 28 x 28 uint8, labels int64)`` of the ``train`` or ``test`` files, validated.

    ``payloads``, when given, collects the decompressed bytes by file stem (for checksums).
    """
    arrays = []
    for stem, ndim in zip(FILES[split], (3, 1)):
        path = _file(folder, stem)
        if path is None:
            raise DataError(f"{folder}: missing {stem} (or {stem}.gz)")
        data = read_bytes(path)
        if payloads is not None:
            payloads[stem] = data
        arrays.append((path, parse_idx(data, path, ndim=ndim)))
    (images_path, images), (labels_path, labels) = arrays
    if images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images):,} images but {labels_path} holds {len(labels):,} labels")
    if len(labels) and labels.max() > 9:
        raise DataError(f"{labels_path}: labels must be in 0..9, found values up to {labels.max()}")
    return images[:, None], labels.astype(np.int64)


def read(data_dir: Path | None, payloads: dict[str, bytes] | None = None):
    """``(folder, (train images, labels), (test images, labels))``."""
    folder = locate(data_dir)
    return folder, read_pair(folder, "train", payloads), read_pair(folder, "test", payloads)


def build(split: str, data_dir: Path | None, augment: bool, seed: int, *, normalize: bool = True,
          cutout: int = 0) -> Dataset:
    info = dataset_info(NAME)
    folder, train, test = read(data_dir)
    transform = standard_transform(augment=augment, crop_padding=2, flip=True, mean=info.mean, std=info.std,
                                   normalize=normalize, cutout=cutout)
    return split_dataset(split, train, test, val_size=val_size_for(len(train[1]), VAL_FRACTION), seed=seed,
                         transform=transform, classes=CLASSES, root=str(folder))


def check(data_dir: Path | None) -> DataReport:
    payloads: dict[str, bytes] = {}
    folder, (_, y_train), (_, y_test) = read(data_dir, payloads)
    train_idx, val_idx = holdout_split(y_train, val_size_for(len(y_train), VAL_FRACTION), 0)
    digests = {stem: checksums.md5_bytes(data) for stem, data in payloads.items()}
    status = checksums.compare(NAME, digests, checksums.PAYLOAD_MD5[NAME])
    notes = []
    gz = checksums.digests_of(folder, [f"{stem}.gz" for stem in payloads if _file(folder, stem).suffix == ".gz"])
    if gz and status.genuine:
        published = checksums.compare(NAME, gz).genuine
        notes.append("the .gz files are the published ones" if published else
                     "the .gz files were re-compressed (e.g. Debian's); their decompressed content was compared")
    if (len(y_train), len(y_test)) != OFFICIAL_SIZES:
        notes.append(f"{len(y_train):,} training / {len(y_test):,} test images; the official set has "
                     f"{OFFICIAL_SIZES[0]:,} / {OFFICIAL_SIZES[1]:,}")
    return DataReport(NAME, str(folder), {"train": len(train_idx), "val": len(val_idx), "test": len(y_test)},
                      len(np.unique(np.concatenate([y_train, y_test]))), status.summary, status.genuine, notes)
