"""ImageNet16-120 (NAS-Bench-201): the 16x16 downsampled ImageNet, first 120 classes.

Expected layout (Chrabaszcz et al.'s downsampled ImageNet, 16x16 pickles)::

    <data_dir>/ImageNet16/train_data_batch_1 ... train_data_batch_10, val_data

(``<data_dir>/cifar.python/ImageNet16/``, NAS-Bench-201's ``$TORCH_HOME`` layout, is accepted too.)
Each file is a pickled dict: ``"data"`` uint8 (N, 768) in CIFAR plane layout, ``"labels"``
1-based 1..1000. As in xautodl, samples with label 1..120 are kept and returned as ``label - 1``
(151,700 train / 6,000 val images in the genuine set). Sizes are not asserted, so subsets work.

Splits: ``train``/``val`` is a seeded, stratified hold-out of the training batches (the fraction
6,000 / 151,700, i.e. 6,000 images on the genuine set, as many as the test split); ``train+val``
is every training image; ``test`` is ``val_data`` (``test_split="full"``: all 6,000 images) or,
with ``test_split="nb201"``, NAS-Bench-201's x-test half of it (3,000 images; :func:`nb201_halves`).
Train augmentation: horizontal flip + RandomCrop(16, padding=2).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from nni_bio.data import checksums
from nni_bio.data._api import DataError, dataset_info
from nni_bio.data.arrays import ArrayDataset, planes_to_nchw, split_dataset
from nni_bio.data.batches import read_batch, stack_batches
from nni_bio.data.locate import candidates, find_folder
from nni_bio.data.report import DataReport
from nni_bio.data.splits import holdout_split, val_size_for
from nni_bio.data.transforms import standard_transform

NAME = "imagenet16-120"
SUBDIRS = ("ImageNet16", "cifar.python/ImageNet16")
TRAIN_FILES = tuple(f"train_data_batch_{k}" for k in range(1, 11))
TEST_FILES = ("val_data",)
ROW_WIDTH = 3 * 16 * 16
NUM_CLASSES = 120
VAL_FRACTION = 6_000 / 151_700
OFFICIAL_SIZES = (151_700, 6_000)
#: NAS-Bench-201's split of the 6,000 test images (AutoDL-Projects configs/nas-benchmark/), if the user has it
NB201_SPLIT_FILE = "imagenet-16-120-test-split.txt"
NB201_SEED = 0


def _read_nb201_file(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(xvalid, xtest)`` from NB201's file: JSON ``{"xvalid": ["int", ["0", ...]], "xtest": [...]}``."""
    try:
        content = json.loads(path.read_text())
        halves = []
        for key in ("xvalid", "xtest"):
            _, values = content[key]
            halves.append(np.asarray([int(v) for v in values], dtype=np.int64))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not NAS-Bench-201's split file ({type(exc).__name__}: {exc}); expected JSON "
                        '{"xvalid": ["int", ["0", ...]], "xtest": ["int", [...]]}') from exc
    xvalid, xtest = halves
    for name, idx in (("xvalid", xvalid), ("xtest", xtest)):
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise DataError(f"{path}: {name} indices {idx.min()}..{idx.max()} do not fit the {n:,} test images "
                            f"with labels 1..120 (NB201's file indexes the genuine 6,000)")
    if len(np.intersect1d(xvalid, xtest)) or len(np.unique(xtest)) != len(xtest):
        raise DataError(f"{path}: xvalid and xtest must be disjoint and without repeats")
    return np.sort(xvalid), np.sort(xtest)


def nb201_halves(labels: np.ndarray, folder: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """NAS-Bench-201's split of the ImageNet16-120 test images: ``(xvalid, xtest, source)``.

    NB201 evaluates on two halves of ``val_data`` (after the 1..120 filter, in file order): 3,000
    x-valid and 3,000 x-test images. Its split is a third-party file that nni-bio never downloads:
    put ``imagenet-16-120-test-split.txt`` (from AutoDL-Projects ``configs/nas-benchmark/``) next to
    ``val_data`` to use it. Without it a seeded (seed 0), class-stratified half split stands in;
    ``source`` says which was used.
    """
    path = folder / NB201_SPLIT_FILE
    if path.is_file():
        xvalid, xtest = _read_nb201_file(path, len(labels))
        return xvalid, xtest, f"NAS-Bench-201 file {path}"
    if len(labels) < 2:
        raise DataError(f"cannot split {len(labels)} test image(s) into NB201 halves")
    xvalid, xtest = holdout_split(labels, len(labels) // 2, NB201_SEED)
    return xvalid, xtest, (f"stratified 50/50 split, seed {NB201_SEED} ({NB201_SPLIT_FILE} not found in {folder}; "
                           "place NB201's file there for its exact halves)")


def where(data_dir: Path | None) -> list[Path]:
    return candidates(data_dir, SUBDIRS)


def locate(data_dir: Path | None) -> Path:
    return find_folder(NAME, data_dir, SUBDIRS, TRAIN_FILES + TEST_FILES,
                       how_to_get="The files are the 16x16 'Imagenet16_train'/'Imagenet16_val' pickles of the "
                                  "downsampled ImageNet (image-net.org), as used by NAS-Bench-201.")


def read_files(folder: Path, files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, int]:
    """``(images NCHW uint8, labels 0..119, rows dropped)``: filtered batch by batch to keep memory low."""
    parts, dropped = [], 0
    for f in files:
        data, labels = read_batch(folder / f, row_width=ROW_WIDTH, label_keys=("labels",), low=1, high=1000)
        keep = labels <= NUM_CLASSES
        dropped += int((~keep).sum())
        parts.append((data[keep], labels[keep] - 1))
    data, labels = stack_batches(parts, ROW_WIDTH)
    return planes_to_nchw(data, 3, 16), labels, dropped


def read(data_dir: Path | None):
    """``(folder, (train images, labels), (test images, labels), rows dropped)``, validated."""
    folder = locate(data_dir)
    *train, dropped_train = read_files(folder, TRAIN_FILES)
    *test, dropped_test = read_files(folder, TEST_FILES)
    return folder, tuple(train), tuple(test), dropped_train + dropped_test


def build(split: str, data_dir: Path | None, augment: bool, seed: int, *, normalize: bool = True,
          cutout: int = 0, test_split: str = "full") -> Dataset:
    info = dataset_info(NAME)
    folder, train, test, _ = read(data_dir)
    transform = standard_transform(augment=augment, crop_padding=2, flip=True, mean=info.mean, std=info.std,
                                   normalize=normalize, cutout=cutout)
    if split == "test" and test_split == "nb201":
        _, xtest, source = nb201_halves(test[1], folder)
        dataset = ArrayDataset(test[0][xtest], test[1][xtest], transform, indices=xtest, root=str(folder))
        dataset.split_source = f"nb201 x-test: {source}"
        return dataset
    return split_dataset(split, train, test, val_size=val_size_for(len(train[1]), VAL_FRACTION), seed=seed,
                         transform=transform, root=str(folder))


def check(data_dir: Path | None) -> DataReport:
    folder, (_, y_train), (_, y_test), dropped = read(data_dir)
    train_idx, val_idx = holdout_split(y_train, val_size_for(len(y_train), VAL_FRACTION), 0)
    status = checksums.compare(NAME, checksums.digests_of(folder, TRAIN_FILES + TEST_FILES))
    notes = [f"{dropped:,} images with labels 121..1000 skipped (ImageNet16-120 keeps labels 1..120)"]
    if len(y_test) >= 2:
        xvalid, xtest, source = nb201_halves(y_test, folder)
        notes.append(f"NB201 test split (--test-split nb201): {len(xvalid):,} x-valid / {len(xtest):,} x-test, "
                     f"{source}")
    if (len(y_train), len(y_test)) != OFFICIAL_SIZES:
        notes.append(f"{len(y_train):,} training / {len(y_test):,} test images with labels 1..120; "
                     f"the official set has {OFFICIAL_SIZES[0]:,} / {OFFICIAL_SIZES[1]:,}")
    return DataReport(NAME, str(folder), {"train": len(train_idx), "val": len(val_idx), "test": len(y_test)},
                      len(np.unique(np.concatenate([y_train, y_test]))), status.summary, status.genuine, notes)
