"""Train/val hold-outs (sizes, disjointness, determinism) and the per-item transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nni_bio.data import dataset_info, get_dataset
from nni_bio.data.cifar import VAL_FRACTION as CIFAR_VAL
from nni_bio.data.fashion_mnist import VAL_FRACTION as FASHION_VAL
from nni_bio.data.fixtures import write_cifar10, write_fashion_mnist
from nni_bio.data.imagenet16 import VAL_FRACTION as IMAGENET16_VAL
from nni_bio.data.safe_pickle import safe_load
from nni_bio.data.splits import holdout_split, val_size_for
from nni_bio.data.transforms import Cutout, ImageTransform


@pytest.mark.parametrize("n, classes, fraction, expected", [
    (50_000, 10, CIFAR_VAL, 5_000), (50_000, 100, CIFAR_VAL, 5_000),
    (60_000, 10, FASHION_VAL, 5_000), (151_700, 120, IMAGENET16_VAL, 6_000),
])
def test_official_sizes_and_stratification(n: int, classes: int, fraction: float, expected: int) -> None:
    labels = np.arange(n) % classes
    train, val = holdout_split(labels, val_size_for(n, fraction), seed=0)
    assert len(val) == expected and len(train) == n - expected
    assert np.bincount(labels[val]).tolist() == [expected // classes] * classes


def test_holdout_is_disjoint_deterministic_and_seeded() -> None:
    labels = np.random.default_rng(1).integers(0, 7, 1000)
    train, val = holdout_split(labels, 123, seed=0)
    assert len(val) == 123 and not set(train) & set(val) and len(train) + len(val) == 1000
    again_train, again_val = holdout_split(labels, 123, seed=0)
    np.testing.assert_array_equal(val, again_val)
    assert not np.array_equal(val, holdout_split(labels, 123, seed=1)[1])


def test_get_dataset_splits_come_from_training_files_only(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path, n=40)
    train, val, test = (get_dataset("cifar10", s, tmp_path) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (180, 20, 40)
    assert not set(train.indices) & set(val.indices) and set(train.indices) | set(val.indices) == set(range(200))
    rows = np.concatenate([safe_load(folder / f"data_batch_{k}")["data"] for k in range(1, 6)])
    np.testing.assert_array_equal(val.images.reshape(20, -1), rows[val.indices])  # val images are training rows
    assert get_dataset("cifar10", "val", tmp_path).indices.tolist() == val.indices.tolist()
    assert get_dataset("cifar10", "val", tmp_path, seed=1).indices.tolist() != val.indices.tolist()


def test_normalize_false_gives_unit_range_and_true_uses_mean_std(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path, n=8)
    raw = safe_load(folder / "test_batch")["data"].reshape(-1, 3, 32, 32)
    plain = get_dataset("cifar10", "test", tmp_path, normalize=False)
    normed = get_dataset("cifar10", "test", tmp_path)
    info = dataset_info("cifar10")
    for i in range(8):
        x = plain[i][0]
        assert x.min() >= 0 and x.max() <= 1
        torch.testing.assert_close(x, torch.from_numpy(raw[i]).float() / 255)
        expected = (x - torch.tensor(info.mean).view(3, 1, 1)) / torch.tensor(info.std).view(3, 1, 1)
        torch.testing.assert_close(normed[i][0], expected)


def test_eval_splits_are_deterministic_and_train_is_augmented(tmp_path: Path) -> None:
    write_fashion_mnist(tmp_path, n_train=60, n_test=6)
    test = get_dataset("fashion-mnist", "test", tmp_path)
    torch.testing.assert_close(test[0][0], test[0][0])
    train = get_dataset("fashion-mnist", "train", tmp_path, normalize=False)
    plain = get_dataset("fashion-mnist", "train", tmp_path, normalize=False, augment=False)
    views = [train[0][0] for _ in range(10)]
    assert any(not torch.equal(v, plain[0][0]) for v in views)


def test_crop_is_a_window_of_the_zero_padded_image() -> None:
    img = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    padded = F.pad(img, (2, 2, 2, 2)).float() / 255
    windows = [padded[:, i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
    windows += [w.flip(-1) for w in windows]
    transform = ImageTransform(crop_padding=2, flip=True)
    seen = set()
    for _ in range(200):
        out = transform(img.numpy())
        match = [k for k, w in enumerate(windows) if torch.equal(out, w)]
        assert match
        seen.add(match[0])
    assert len(seen) > 25  # offsets and flips both vary


def test_cutout_zeroes_a_clipped_square_after_normalisation() -> None:
    transform = ImageTransform(mean=(0.5,), std=(0.25,), cutout=4)
    img = np.full((1, 16, 16), 255, np.uint8)
    for _ in range(20):
        out = transform(img)
        zeros = int((out == 0).sum())
        assert 4 <= zeros <= 16
        torch.testing.assert_close(out[out != 0], torch.full((256 - zeros,), 2.0))
    tensor = Cutout(6)(torch.ones(3, 10, 10))
    assert int((tensor[0] == 0).sum()) in range(9, 37) and torch.equal(tensor[0], tensor[2])


def test_cutout_only_on_augmented_splits(tmp_path: Path) -> None:
    write_cifar10(tmp_path, n=4)
    val = get_dataset("cifar10", "val", tmp_path, cutout=16)
    assert val.transform.cutout == 0 and val.transform.crop_padding == 0
    train = get_dataset("cifar10", "train", tmp_path, cutout=16)
    assert train.transform.cutout == 16 and train.transform.crop_padding == 4 and train.transform.flip
    digits = get_dataset("digits", "train", cutout=4)
    assert int((digits[0][0] == 0).sum()) >= int((get_dataset("digits", "train")[0][0] == 0).sum())
