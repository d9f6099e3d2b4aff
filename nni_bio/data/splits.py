"""Fixed, seeded, stratified train/validation hold-outs from a training set.

The validation split is carved out of the training files, so a search never sees the test set.
The same ``(labels, val_size, seed)`` always gives the same split (numpy's PCG64 generator).

Example:
    >>> import numpy as np
    >>> train, val = holdout_split(np.repeat(np.arange(10), 10), val_size=20, seed=0)
    >>> len(train), len(val), np.bincount(np.repeat(np.arange(10), 10)[val]).tolist()
    (80, 20, [2, 2, 2, 2, 2, 2, 2, 2, 2, 2])
"""

from __future__ import annotations

import numpy as np

from nni_bio.data._api import DataError


def val_size_for(n: int, fraction: float) -> int:
    """``round(n * fraction)``, at least 1 and leaving at least 1 training sample (when n >= 2)."""
    return int(min(max(round(n * fraction), 1), max(n - 1, 1)))


def holdout_split(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train_indices, val_indices)`` with ``val_size`` validation samples.

    Each class gets its proportional share of the validation set (largest remainder; ties broken
    by the seeded generator); within a class the samples are chosen by a seeded permutation.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if not 0 < val_size < n:
        raise DataError(f"cannot hold out {val_size} validation samples from {n} training samples")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (val_size / n)
    quota = np.floor(exact).astype(np.int64)
    order = np.lexsort((rng.random(len(classes)), -(exact - quota)))
    quota[order[: val_size - int(quota.sum())]] += 1
    shuffled = labels[perm]
    val = np.concatenate([perm[shuffled == c][:q] for c, q in zip(classes, quota)])
    val.sort()
    mask = np.ones(n, dtype=bool)
    mask[val] = False
    return np.flatnonzero(mask), val
