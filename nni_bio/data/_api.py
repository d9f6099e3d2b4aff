"""The data-set table and ``get_dataset``.

Each data set lives in its own module (``digits.py``, ``cifar.py``, ``imagenet16.py``,
``fashion_mnist.py``, ``imagenet.py``), imported only when the data set is used, and exposes:

- ``build(split, data_dir, augment, seed, *, normalize, cutout) -> Dataset``
- ``check(data_dir) -> DataReport``: validates a copy and says what it found (``nni-bio data check``)
- ``where(data_dir) -> list[Path]``: the folders it is looked for in (``nni-bio data list``)
- ``locate(data_dir) -> Path``: the folder in use, found without reading the data (DataError if none)
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from torch.utils.data import Dataset

from nni_bio.core.errors import NniBioError

if TYPE_CHECKING:
    from nni_bio.data.report import DataReport

Split = Literal["train", "val", "test", "train+val"]
#: ``train+val`` is every training image (DARTS' final training: all 50k CIFAR images, no validation set)
SPLITS = ("train", "val", "test", "train+val")
#: ``full``: the data set's own test files; ``nb201``: NAS-Bench-201's half of them (ImageNet16-120)
TEST_SPLITS = ("full", "nb201")

#: environment variable naming the folder that holds user copies of the data sets
DATA_DIR_ENV = "NNI_BIO_DATA"


class DataError(NniBioError):
    """A data set is missing, malformed or asked for in a way that cannot work."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a data set: what a model built for it needs to know.

    ``mean``/``std`` are the per-channel normalisation constants (pixels in [0, 1]) that
    ``get_dataset(..., normalize=True)`` applies; ``None`` means the images are left in [0, 1].
    ``builder(split, data_dir, augment, seed, *, normalize, cutout)`` makes the Dataset (with
    ``test_split=`` too when ``test_splits`` offers more than ``full``); ``check(data_dir)``
    validates a copy; ``where(data_dir)`` lists the folders searched; ``locate(data_dir)`` returns
    the folder in use (cheap: no data is read).
    """

    name: str
    num_classes: int
    channels: int
    image_size: int
    builder: Callable[..., Dataset]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    check: Callable[[Path | None], DataReport] | None = None
    where: Callable[[Path | None], list[Path]] | None = None
    locate: Callable[[Path | None], Path] | None = None
    test_splits: tuple[str, ...] = ("full",)


@dataclass(frozen=True)
class _Lazy:
    """``nni_bio.data.<module>.<attr>`` (attr may be dotted), imported on first call.

    Keeps ``import nni_bio.data`` light (no torchvision, no scikit-learn) and stays picklable.
    """

    module: str
    attr: str

    def __call__(self, *args, **kwargs):
        target = importlib.import_module(f"nni_bio.data.{self.module}")
        for part in self.attr.split("."):
            target = getattr(target, part)
        return target(*args, **kwargs)


def _entry(name: str, module: str, num_classes: int, channels: int, image_size: int,
           mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> DatasetInfo:
    """``module`` is ``"cifar"`` (module-level build/check/where) or ``"cifar:CIFAR10"`` (an object's)."""
    module, _, owner = module.partition(":")
    prefix = f"{owner}." if owner else ""
    return DatasetInfo(name, num_classes, channels, image_size, builder=_Lazy(module, prefix + "build"), mean=mean,
                       std=std, check=_Lazy(module, prefix + "check"), where=_Lazy(module, prefix + "where"),
                       locate=_Lazy(module, prefix + "locate"))


def _per255(*values: float) -> tuple[float, ...]:
    return tuple(round(v / 255, 6) for v in values)


DATASETS: dict[str, DatasetInfo] = {
    "digits": _entry("digits", "digits", 10, 1, 8, None, None),
    "fashion-mnist": _entry("fashion-mnist", "fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,)),
    "cifar10": _entry("cifar10", "cifar:CIFAR10", 10, 3, 32, _per255(125.3, 123.0, 113.9), _per255(63.0, 62.1, 66.7)),
    "cifar100": _entry("cifar100", "cifar:CIFAR100", 100, 3, 32,
                       _per255(129.3, 124.1, 112.4), _per255(68.2, 65.4, 70.4)),
    "imagenet16-120": dataclasses.replace(_entry("imagenet16-120", "imagenet16", 120, 3, 16,
                                                 _per255(122.68, 116.66, 104.01), _per255(63.22, 61.26, 65.09)),
                                          test_splits=TEST_SPLITS),
    "imagenet": _entry("imagenet", "imagenet", 1000, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def dataset_info(name: str) -> DatasetInfo:
    """Facts about data set ``name``; unknown names get a did-you-mean error."""
    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=2)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise DataError(f"unknown data set {name!r}.{hint} Available: {', '.join(DATASETS)}")
    return DATASETS[name]


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """``data_dir`` if given, else ``$NNI_BIO_DATA``, else None."""
    value = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser() if value else None


def get_dataset(name: str, split: Split, data_dir: str | os.PathLike | None = None, *,
                augment: bool | None = None, seed: int = 0, normalize: bool = True, cutout: int = 0,
                test_split: str = "full") -> Dataset:
    """A torch Dataset of ``(image tensor CxHxW float, int label)``; nothing is ever downloaded.

    User copies are looked for under ``data_dir`` (default ``$NNI_BIO_DATA``), one sub-folder per
    data set: ``cifar-10-batches-py/``, ``cifar-100-python/``, ``ImageNet16/``, ``fashion-mnist/``
    (or Debian's ``/usr/share/datasets/fashion-mnist``), ``imagenet/{train,val}/``.
    ``digits`` ships with scikit-learn. Run ``nni-bio data check NAME`` to validate a copy.

    Args:
        name: a key of :data:`DATASETS`.
        split: ``train``, ``val`` (a fixed, seeded hold-out from the training data), ``train+val``
            (all training data: final training without a validation set, DARTS' convention) or
            ``test`` (the data set's own test files; a search should never look at it).
        data_dir: where user copies live (default ``$NNI_BIO_DATA``); unused for ``digits``.
        augment: standard augmentation for the data set (default: on for ``train`` only).
        seed: seed of the train/val split.
        normalize: subtract :attr:`DatasetInfo.mean` and divide by :attr:`DatasetInfo.std`; with
            ``False`` pixels stay in [0, 1] (e.g. to put the normalisation inside the model).
        cutout: side of the Cutout square (DeVries & Taylor 2017) applied after normalisation
            when ``augment`` is on; 0 disables it.
        test_split: which ``test`` images: ``full`` (all test files) or, for ``imagenet16-120``,
            ``nb201``: NAS-Bench-201's 3,000-image x-test half of the 6,000 (see
            :func:`nni_bio.data.imagenet16.nb201_halves`).

    Raises:
        DataError: unknown name or split, or the data set is missing or malformed (the message
            says which files are expected where and how to point at them).

    Example:
        >>> from nni_bio.data import get_dataset
        >>> x, y = get_dataset("digits", "train")[0]
        >>> tuple(x.shape), isinstance(y, int)
        ((1, 8, 8), True)
    """
    info = dataset_info(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if test_split not in info.test_splits:
        others = [n for n, i in DATASETS.items() if test_split in i.test_splits]
        raise DataError(f"{name} has no {test_split!r} test split (it has: {', '.join(info.test_splits)})"
                        + (f"; {test_split!r} exists for {', '.join(others)}" if others else
                           f"; test splits are {', '.join(TEST_SPLITS)}"))
    extra = {"test_split": test_split} if test_split != "full" else {}
    if not isinstance(cutout, int) or isinstance(cutout, bool) or cutout < 0:
        raise DataError(f"cutout must be a non-negative int (side of the square in pixels), got {cutout!r}")
    augment = split in ("train", "train+val") if augment is None else bool(augment)
    return info.builder(split, resolve_data_dir(data_dir), augment, seed, normalize=normalize, cutout=cutout, **extra)


def check_dataset(name: str, data_dir: str | os.PathLike | None = None) -> DataReport:
    """Validate the copy of ``name`` that :func:`get_dataset` would use; raise DataError if unusable."""
    return dataset_info(name).check(resolve_data_dir(data_dir))
