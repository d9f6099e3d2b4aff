"""Reading one pickled CIFAR-style batch (CIFAR-10, CIFAR-100, ImageNet16) safely, with its checks.

A batch is a pickled ``dict`` with ``"data"``: uint8 (N, 3*S*S), each row S*S red values, then
green, then blue (row-major planes), and a label list (``"labels"`` or ``"fine_labels"``). Every
failed check raises :class:`DataError` naming the file and the check.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nni_bio.data._api import DataError
from nni_bio.data.safe_pickle import safe_load


def _str_keys(obj: dict) -> dict:
    """Python 3 pickles written with bytes keys (``b"data"``) read like Python 2 ones."""
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def load_dict(path: Path) -> dict[str, Any]:
    """Safely unpickle ``path`` and check that it holds a dict."""
    obj = safe_load(path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return _str_keys(obj)


def check_labels(path: Path, key: str, values: Any, rows: int, low: int, high: int) -> np.ndarray:
    """``values`` as int64 after checking: 1-D integers, one per data row, all in ``low..high``."""
    labels = np.asarray(values)
    if labels.size == 0:
        labels = labels.astype(np.int64)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: {key!r} must be a list of ints, found {labels.dtype} with shape {labels.shape}")
    if len(labels) != rows:
        raise DataError(f"{path}: {rows} rows of 'data' but {len(labels)} entries in {key!r}; they must match")
    if rows and (labels.min() < low or labels.max() > high):
        raise DataError(f"{path}: {key!r} must be in {low}..{high}, found values {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


def read_batch(path: Path, *, row_width: int, label_keys: Sequence[str], low: int, high: int,
               optional_labels: dict[str, tuple[int, int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(data uint8 (N, row_width), labels int64 (N,))`` of one batch file, validated.

    Args:
        row_width: 3072 for CIFAR (3 x 32 x 32), 768 for ImageNet16 (3 x 16 x 16).
        label_keys: label key names, first present wins (CIFAR-100: ``fine_labels``).
        low, high: the allowed label range, inclusive.
        optional_labels: further label keys checked when present, e.g. ``{"coarse_labels": (0, 19)}``.
    """
    batch = load_dict(path)
    if "data" not in batch:
        raise DataError(f"{path}: missing key 'data' (keys found: {', '.join(map(str, batch)) or 'none'})")
    key = next((k for k in label_keys if k in batch), None)
    if key is None:
        raise DataError(f"{path}: missing key {' or '.join(map(repr, label_keys))} "
                        f"(keys found: {', '.join(map(str, batch))})")
    data = batch["data"]
    if not isinstance(data, np.ndarray):
        raise DataError(f"{path}: 'data' must be a numpy array, found {type(data).__name__}")
    if data.dtype != np.uint8:
        raise DataError(f"{path}: 'data' has dtype {data.dtype}, expected uint8 pixel values")
    side = int(round((row_width // 3) ** 0.5))
    if data.ndim != 2 or data.shape[1] != row_width:
        raise DataError(f"{path}: 'data' has shape {data.shape}, expected (N, {row_width}): one row per image, "
                        f"{side * side} red then {side * side} green then {side * side} blue values ({side}x{side})")
    labels = check_labels(path, key, batch[key], len(data), low, high)
    for extra, (lo, hi) in (optional_labels or {}).items():
        if extra in batch:
            check_labels(path, extra, batch[extra], len(data), lo, hi)
    return data, labels


def read_names(path: Path, key: str, count: int) -> list[str]:
    """The class names stored under ``key`` in a meta file: ``count`` strings."""
    meta = load_dict(path)
    names = meta.get(key)
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, bytes)) for n in names):
        raise DataError(f"{path}: {key!r} must be a list of class names")
    if len(names) != count:
        raise DataError(f"{path}: {key!r} has {len(names)} names, expected {count}")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


def stack_batches(parts: list[tuple[np.ndarray, np.ndarray]], row_width: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``(data, labels)`` batches (keeping an empty list well-shaped)."""
    if not parts:
        return np.zeros((0, row_width), np.uint8), np.zeros(0, np.int64)
    return np.concatenate([d for d, _ in parts]), np.concatenate([y for _, y in parts])
