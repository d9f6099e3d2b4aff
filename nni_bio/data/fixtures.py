"""Tiny synthetic copies of every on-disk format, written at test time (numpy only; no binaries in git).

Each writer puts the files where :func:`nni_bio.data.get_dataset` looks for them under ``root``, so
``get_dataset(name, split, data_dir=root)`` reads the fixture. Pixels are random uint8, labels are
spread over the classes. For tests of nni-bio and of plugins that read these data sets.

Example:
    >>> import tempfile
    >>> from nni_bio.data import get_dataset
    >>> from nni_bio.data.fixtures import write_cifar10
    >>> root = tempfile.mkdtemp()
    >>> _ = write_cifar10(root, n=10)
    >>> x, y = get_dataset("cifar10", "test", data_dir=root)[0]
    >>> tuple(x.shape)
    (3, 32, 32)
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np


def _images(rng: np.random.Generator, n: int, side: int) -> np.ndarray:
    """N x 3*side*side uint8 rows: red plane | green plane | blue plane."""
    return rng.integers(0, 256, size=(n, 3 * side * side), dtype=np.uint8)


def _labels(rng: np.random.Generator, n: int, low: int, high: int) -> list[int]:
    """``n`` labels spread evenly over ``low..high`` (inclusive; each value once when n >= the span), shuffled."""
    span = high - low + 1
    return (low + rng.permutation((np.arange(n) * span + span // 2) // n)).tolist()


def write_pickle(obj: Any, path: str | os.PathLike, *, protocol: int = 2) -> Path:
    """Pickle ``obj`` to ``path`` (protocol 2 by default: what Python 2 era files look like)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def write_batch(path: str | os.PathLike, data: np.ndarray, labels: Any, *, label_key: str = "labels",
                protocol: int = 2, **extra: Any) -> Path:
    """One CIFAR-style batch file: ``{"data": data, label_key: list(labels), **extra}``."""
    labels = labels.tolist() if isinstance(labels, np.ndarray) else list(labels)
    return write_pickle({"data": data, label_key: labels, **extra}, path, protocol=protocol)


def write_cifar10(root: str | os.PathLike, n: int = 10, *, seed: int = 0, meta: bool = True,
                  protocol: int = 2) -> Path:
    """``root/cifar-10-batches-py/`` with ``n`` images in each of the 5 training batches and the test batch."""
    rng, folder = np.random.default_rng(seed), Path(root) / "cifar-10-batches-py"
    if meta:
        write_pickle({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": n, "num_vis": 3072},
                     folder / "batches.meta", protocol=protocol)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        write_batch(folder / name, _images(rng, n, 32), _labels(rng, n, 0, 9), protocol=protocol,
                    batch_label=name, filenames=[f"{name}_{j}.png" for j in range(n)])
    return folder


def write_cifar100(root: str | os.PathLike, n: int = 40, *, seed: int = 0, meta: bool = True,
                   protocol: int = 2) -> Path:
    """``root/cifar-100-python/`` with ``n`` images in ``train`` and in ``test`` (fine and coarse labels)."""
    rng, folder = np.random.default_rng(seed), Path(root) / "cifar-100-python"
    if meta:
        write_pickle({"fine_label_names": [f"fine{i}" for i in range(100)],
                      "coarse_label_names": [f"coarse{i}" for i in range(20)]}, folder / "meta", protocol=protocol)
    for name in ("train", "test"):
        fine = np.asarray(_labels(rng, n, 0, 99))
        write_batch(folder / name, _images(rng, n, 32), fine, label_key="fine_labels", protocol=protocol,
                    coarse_labels=(fine // 5).tolist(), batch_label=name,
                    filenames=[f"{name}_{j}.png" for j in range(n)])
    return folder


def write_imagenet16(root: str | os.PathLike, n: int = 12, *, max_label: int = 130, seed: int = 0,
                     protocol: int = 2) -> Path:
    """``root/ImageNet16/`` with ``n`` images per file: 10 training batches and ``val_data``.

    Labels are 1-based, spread over ``1..max_label``: with the defaults each file holds one label
    above 120 (filtered out by ImageNet16-120) and eleven in 1..120.
    """
    rng, folder = np.random.default_rng(seed), Path(root) / "ImageNet16"
    for k in range(1, 11):
        data = _images(rng, n, 16)
        write_batch(folder / f"train_data_batch_{k}", data, _labels(rng, n, 1, max_label), protocol=protocol,
                    mean=data.mean(0))
    write_batch(folder / "val_data", _images(rng, n, 16), _labels(rng, n, 1, max_label), protocol=protocol)
    return folder


def write_idx(path: str | os.PathLike, array: np.ndarray, *, gz: bool = False) -> Path:
    """``array`` (uint8, any number of dimensions) as an IDX file, gzip-compressed when ``gz``."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = struct.pack(f">HBB{array.ndim}I", 0, 0x08, array.ndim, *array.shape) + array.tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload, mtime=0) if gz else payload)
    return path


def write_fashion_mnist(root: str | os.PathLike, n_train: int = 48, n_test: int = 12, *, gz: bool = True,
                        seed: int = 0, subdir: str = "fashion-mnist") -> Path:
    """``root/<subdir>/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``: 28x28 images, labels 0..9."""
    rng, folder = np.random.default_rng(seed), Path(root) / subdir
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                  gz=gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", np.asarray(_labels(rng, n, 0, 9)), gz=gz)
    return folder


def write_imagenet_folder(root: str | os.PathLike, classes: int = 3, per_class: int = 4, *, val_per_class: int = 2,
                          size: int = 40, seed: int = 0) -> Path:
    """``root/imagenet/{train,val}/n0000000k/*.JPEG``: small random RGB JPEGs (needs Pillow)."""
    from PIL import Image

    rng, folder = np.random.default_rng(seed), Path(root) / "imagenet"
    for split, count in (("train", per_class), ("val", val_per_class)):
        for c in range(classes):
            class_dir = folder / split / f"n{c:08d}"
            class_dir.mkdir(parents=True, exist_ok=True)
            for j in range(count):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(class_dir / f"{split}_{c}_{j}.JPEG", format="JPEG")
    return folder
