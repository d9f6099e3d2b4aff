"""ImageNet (ILSVRC-2012) as a folder tree of JPEGs, read with torchvision's ``ImageFolder``.

Expected layout (class folders, e.g. WordNet ids; the official validation archive must first be
sorted into class folders, e.g. with the common ``valprep.sh``)::

    <data_dir>/imagenet/train/<class>/*.JPEG
    <data_dir>/imagenet/val/<class>/*.JPEG      (same class folders as train)

Splits: ``train``/``val`` is a seeded, stratified hold-out of 1 % of ``imagenet/train`` (about
12,800 images); ``train+val`` is all of ``imagenet/train``; ``test`` is ``imagenet/val``.
Transforms (DARTS' ImageNet recipe): RandomResizedCrop(224) + horizontal flip + ColorJitter(0.4,
0.4, 0.4, hue 0.2) when augmenting, else Resize(256) + CenterCrop(224). No checksums: the files
are checked only for layout and for decoding of the first image in each folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, Subset

from nni_bio.data._api import DataError, dataset_info
from nni_bio.data.locate import candidates, find_folder
from nni_bio.data.report import DataReport
from nni_bio.data.splits import holdout_split, val_size_for
from nni_bio.data.transforms import Cutout

NAME = "imagenet"
SUBDIRS = ("imagenet",)
VAL_FRACTION = 0.01
OFFICIAL_SIZES = (1_281_167, 50_000)


def where(data_dir: Path | None) -> list[Path]:
    return candidates(data_dir, SUBDIRS)


def locate(data_dir: Path | None) -> Path:
    return find_folder(NAME, data_dir, SUBDIRS, ["train", "val"], exists=lambda d, n: (d / n).is_dir(),
                       how_to_get="train/ and val/ hold one sub-folder of .JPEG files per class.")


def transform_for(augment: bool, normalize: bool, cutout: int):
    """The torchvision transform pipeline of a split."""
    from torchvision import transforms as T

    info = dataset_info(NAME)
    steps = ([T.RandomResizedCrop(224), T.RandomHorizontalFlip(),
              T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2)] if augment
             else [T.Resize(256), T.CenterCrop(224)])
    steps.append(T.ToTensor())
    if normalize:
        steps.append(T.Normalize(info.mean, info.std))
    if augment and cutout:
        steps.append(Cutout(cutout))
    return T.Compose(steps)


def image_folder(folder: Path, transform=None, classes: list[str] | None = None):
    """``ImageFolder(folder)`` with its errors as DataError; ``classes`` must match when given."""
    from torchvision.datasets import ImageFolder

    try:
        dataset = ImageFolder(str(folder), transform=transform)
    except FileNotFoundError as exc:
        raise DataError(f"{folder}: {exc} Expected one sub-folder of .JPEG images per class.") from exc
    if classes is not None and dataset.classes != classes:
        missing = sorted(set(classes) - set(dataset.classes))[:5]
        extra = sorted(set(dataset.classes) - set(classes))[:5]
        raise DataError(f"{folder}: its class folders differ from train/'s ({len(dataset.classes)} vs "
                        f"{len(classes)}; missing e.g. {missing}, unexpected e.g. {extra}); "
                        "val/ must use the same class folders as train/")
    return dataset


def build(split: str, data_dir: Path | None, augment: bool, seed: int, *, normalize: bool = True,
          cutout: int = 0) -> Dataset:
    root = locate(data_dir)
    transform = transform_for(augment, normalize, cutout)
    train = image_folder(root / "train", transform if split != "test" else None)
    if split == "test":
        return image_folder(root / "val", transform, classes=train.classes)
    if split == "train+val":
        return train
    labels = np.asarray(train.targets)
    train_idx, val_idx = holdout_split(labels, val_size_for(len(labels), VAL_FRACTION), seed)
    return Subset(train, (train_idx if split == "train" else val_idx).tolist())


def check(data_dir: Path | None) -> DataReport:
    root = locate(data_dir)
    train = image_folder(root / "train")
    test = image_folder(root / "val", classes=train.classes)
    for dataset in (train, test):
        path = dataset.samples[0][0]
        try:
            dataset.loader(path)
        except Exception as exc:  # PIL raises many types
            raise DataError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc
    labels = np.asarray(train.targets)
    train_idx, val_idx = holdout_split(labels, val_size_for(len(labels), VAL_FRACTION), 0)
    notes = []
    if (len(train), len(test)) != OFFICIAL_SIZES or len(train.classes) != 1000:
        notes.append(f"{len(train):,} training / {len(test):,} validation images in {len(train.classes)} classes; "
                     f"ILSVRC-2012 has {OFFICIAL_SIZES[0]:,} / {OFFICIAL_SIZES[1]:,} in 1000")
    return DataReport(NAME, str(root), {"train": len(train_idx), "val": len(val_idx), "test": len(test)},
                      len(train.classes), "not checked (a folder of images has no official checksums)", None, notes)
