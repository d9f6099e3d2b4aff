"""The data-set readers on generated fixtures: shapes, channel order, labels, and helpful errors."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from nni_bio.data import DATASETS, DataError, dataset_info, get_dataset
from nni_bio.data import fashion_mnist
from nni_bio.data.fixtures import (write_batch, write_cifar10, write_cifar100, write_fashion_mnist, write_idx,
                                   write_imagenet16, write_imagenet_folder)
from nni_bio.data.idx import read_idx
from nni_bio.data.safe_pickle import safe_load

WRITERS = {"cifar10": write_cifar10, "cifar100": write_cifar100, "imagenet16-120": write_imagenet16,
           "fashion-mnist": write_fashion_mnist, "imagenet": write_imagenet_folder}
SHAPES = {"digits": (1, 8, 8), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "imagenet16-120": (3, 16, 16),
          "fashion-mnist": (1, 28, 28), "imagenet": (3, 224, 224)}


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No $NNI_BIO_DATA and no Debian Fashion-MNIST unless a test asks for them."""
    monkeypatch.delenv("NNI_BIO_DATA", raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")


def _painted(n: int, side: int) -> np.ndarray:
    """Rows in CIFAR layout: image k has only plane k % 3 lit (255), plus pixel (row 1, col 2) = 7 in plane 0."""
    rows = np.zeros((n, 3, side, side), np.uint8)
    for k in range(n):
        rows[k, k % 3] = 255
    rows[:, 0, 1, 2] = 7
    return rows.reshape(n, -1)


def test_table_keeps_fields_and_adds_normalisation() -> None:
    assert list(DATASETS) == ["digits", "fashion-mnist", "cifar10", "cifar100", "imagenet16-120", "imagenet"]
    for name, info in DATASETS.items():
        assert info.name == name and info.channels == SHAPES[name][0] and info.image_size == SHAPES[name][1]
        assert callable(info.builder) and callable(info.check) and callable(info.where) and callable(info.locate)
        assert (info.mean is None) == (info.std is None) == (name == "digits")
        if info.mean is not None:
            assert len(info.mean) == len(info.std) == info.channels
    assert dataset_info("cifar10").mean == pytest.approx((125.3 / 255, 123.0 / 255, 113.9 / 255), abs=1e-6)
    assert dataset_info("imagenet16-120").num_classes == 120


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_fixture_reads_in_every_split(tmp_path: Path, name: str) -> None:
    WRITERS[name](tmp_path)
    for split in ("train", "val", "test"):
        dataset = get_dataset(name, split, tmp_path)
        assert len(dataset) > 0
        x, y = dataset[0]
        assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and tuple(x.shape) == SHAPES[name]
        assert type(y) is int and 0 <= y < DATASETS[name].num_classes


def test_cifar_channel_order_matches_torchvision(tmp_path: Path) -> None:
    from PIL import Image
    from torchvision.transforms.functional import to_tensor

    folder = write_cifar10(tmp_path, n=6)
    rows = _painted(6, 32)
    write_batch(folder / "test_batch", rows, [0, 1, 2, 3, 4, 5])
    dataset = get_dataset("cifar10", "test", tmp_path, normalize=False)
    for k in range(6):
        x, y = dataset[k]
        assert y == k
        lit = k % 3
        assert torch.all(x[lit][x[lit] != 7 / 255] == 1.0)
        assert x[0, 1, 2] == pytest.approx(7 / 255)
        others = [c for c in range(3) if c != lit and c != 0]
        assert all(torch.all(x[c] == 0) for c in others)
        # torchvision's own route: rows -> NHWC -> PIL -> ToTensor
        nhwc = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)[k]
        torch.testing.assert_close(x, to_tensor(Image.fromarray(nhwc)))


def test_imagenet16_channel_order_and_label_shift(tmp_path: Path) -> None:
    folder = write_imagenet16(tmp_path, n=4)
    rows = _painted(5, 16)
    write_batch(folder / "val_data", rows, [1, 120, 121, 1000, 5])
    dataset = get_dataset("imagenet16-120", "test", tmp_path, normalize=False)
    assert len(dataset) == 3
    assert [dataset[i][1] for i in range(3)] == [0, 119, 4]
    kept = [0, 1, 4]  # rows whose label is in 1..120
    for i, row in enumerate(kept):
        x, _ = dataset[i]
        assert x[row % 3].max() == 1.0 and x[0, 1, 2] == pytest.approx(7 / 255)
        np.testing.assert_allclose(x.numpy() * 255, rows[row].reshape(3, 16, 16), atol=1e-3)


def test_imagenet16_training_labels_are_filtered_and_zero_based(tmp_path: Path) -> None:
    folder = write_imagenet16(tmp_path, n=12, max_label=130)
    raw = np.concatenate([safe_load(folder / f"train_data_batch_{k}")["labels"] for k in range(1, 11)])
    assert raw.max() > 120 and raw.min() >= 1
    train, val = (get_dataset("imagenet16-120", s, tmp_path) for s in ("train", "val"))
    assert len(train) + len(val) == int((raw <= 120).sum())
    labels = np.concatenate([train.labels, val.labels])
    assert labels.min() >= 0 and labels.max() <= 119
    assert sorted(labels.tolist()) == sorted((raw[raw <= 120] - 1).tolist())


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path, n=10)
    stored = safe_load(folder / "test")
    dataset = get_dataset("cifar100", "test", tmp_path)
    assert dataset.targets == stored["fine_labels"] != stored["coarse_labels"]
    assert dataset.classes[:2] == ["fine0", "fine1"]
    write_batch(folder / "test", stored["data"], stored["fine_labels"], label_key="labels")
    with pytest.raises(DataError, match=r"test: missing key 'fine_labels'"):
        get_dataset("cifar100", "test", tmp_path)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx_gz_and_plain(tmp_path: Path, gz: bool) -> None:
    folder = write_fashion_mnist(tmp_path, n_train=24, n_test=6, gz=gz)
    suffix = ".gz" if gz else ""
    images = read_idx(folder / f"t10k-images-idx3-ubyte{suffix}")
    labels = read_idx(folder / f"t10k-labels-idx1-ubyte{suffix}")
    dataset = get_dataset("fashion-mnist", "test", tmp_path, normalize=False)
    assert len(dataset) == 6 and dataset.targets == labels.tolist()
    x, _ = dataset[3]
    np.testing.assert_allclose(x[0].numpy() * 255, images[3], atol=1e-3)  # row-major 28x28, not transposed


def test_fashion_mnist_torchvision_layout_and_gzip_by_content(tmp_path: Path) -> None:
    folder = write_fashion_mnist(tmp_path, subdir="FashionMNIST/raw", gz=False)
    plain = folder / "t10k-labels-idx1-ubyte"
    plain.write_bytes(gzip.compress(plain.read_bytes()))  # compressed but not named .gz
    assert len(get_dataset("fashion-mnist", "test", tmp_path)) == 12


def test_idx_errors_name_file_and_check(tmp_path: Path) -> None:
    folder = write_fashion_mnist(tmp_path, gz=False)
    images = folder / "train-images-idx3-ubyte"
    images.write_bytes(struct.pack(">IIII", 0x0803, 48, 28, 28) + b"\x00" * 100)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: IDX header says shape \(48, 28, 28\)"):
        get_dataset("fashion-mnist", "train", tmp_path)
    images.write_bytes(struct.pack(">IIII", 0x0903, 1, 28, 28) + b"\x00" * 784)
    with pytest.raises(DataError, match="bad IDX magic number 0x00000903"):
        get_dataset("fashion-mnist", "train", tmp_path)
    write_idx(images, np.zeros((47, 28, 28), np.uint8))
    with pytest.raises(DataError, match="holds 47 images but .*train-labels-idx1-ubyte holds 48 labels"):
        get_dataset("fashion-mnist", "train", tmp_path)
    write_idx(images, np.zeros((48, 28), np.uint8))
    with pytest.raises(DataError, match="2 dimensions .* expected 3"):
        get_dataset("fashion-mnist", "train", tmp_path)
    write_idx(images, np.zeros((48, 28, 28), np.uint8))
    valid = struct.pack(">IIII", 0x0803, 10, 28, 28) + np.random.default_rng(0).bytes(7840)
    (folder / "t10k-images-idx3-ubyte").write_bytes(gzip.compress(valid)[:1000])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        get_dataset("fashion-mnist", "test", tmp_path)


def _gzip_idx(path: Path, header: bytes, payload_chunks) -> Path:
    """Write ``header`` then the chunks through a streaming gzip writer (never the whole payload in memory)."""
    with gzip.open(path, "wb") as f:
        f.write(header)
        for chunk in payload_chunks:
            f.write(chunk)
    return path


def _peak_bytes(fn) -> int:
    """Peak Python memory allocated while ``fn()`` runs (tracemalloc)."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_idx_gzip_bomb_stops_one_byte_past_the_header_size(tmp_path: Path) -> None:
    # the header says 10 images (7,840 bytes); the gzip (~100 KB) decompresses to 100 MB
    bomb = _gzip_idx(tmp_path / "t10k-images-idx3-ubyte.gz", struct.pack(">IIII", 0x0803, 10, 28, 28),
                     (bytes(1 << 20) for _ in range(100)))
    assert bomb.stat().st_size < 200_000

    def read():
        with pytest.raises(DataError, match=r"header says shape \(10, 28, 28\) .* decompressed file has more than"):
            read_idx(bomb)

    assert _peak_bytes(read) < 4_000_000  # before: the whole 100 MB was decompressed first


def test_idx_header_must_fit_the_compressed_file(tmp_path: Path) -> None:
    small = _gzip_idx(tmp_path / "a.gz", struct.pack(">IIII", 0x0803, 600_000, 28, 28), [bytes(1000)])
    peak = _peak_bytes(lambda: _expect(small, "more than a [0-9,]+-byte gzip file can hold"))
    assert peak < 1_000_000  # refused before decompressing (the header claims 470 MB)
    huge = _gzip_idx(tmp_path / "b.gz", struct.pack(">IIII", 0x0803, 0xFFFFFFFF, 0xFFFF, 0xFFFF), [b""])
    _expect(huge, "more than the 1,073,741,824 this reader accepts")
    short = _gzip_idx(tmp_path / "c.gz", struct.pack(">IIII", 0x0803, 10, 28, 28), [bytes(7839)])
    _expect(short, r"decompressed file has only 7,855 bytes, not that")
    exact = _gzip_idx(tmp_path / "d.gz", struct.pack(">IIII", 0x0803, 10, 28, 28), [bytes(7840)])
    assert read_idx(exact, ndim=3).shape == (10, 28, 28)


def _expect(path: Path, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        read_idx(path)


def test_uncompressed_idx_size_is_checked_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(struct.pack(">II", 0x0801, 5) + bytes(5 + 100_000_000 // 100))
    _expect(path, r"header says shape \(5,\) \(13 bytes with the header\) but the file has 1,000,013 bytes")
    assert _peak_bytes(lambda: _expect(path, "but the file has")) < 100_000  # the payload is never read


def test_real_fashion_mnist_files_load(tmp_path: Path) -> None:
    folder = Path("/usr/share/datasets/fashion-mnist")
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    images, labels = fashion_mnist.read_pair(folder, "test")
    assert images.shape == (10000, 1, 28, 28) and labels.shape == (10000,)
    assert np.bincount(labels).tolist() == [1000] * 10


def test_missing_files_say_what_is_expected_where(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path, n=4)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError) as info:
        get_dataset("cifar10", "train", tmp_path)
    message = str(info.value)
    assert "data_batch_1, data_batch_2, data_batch_3" in message and "<data_dir>/cifar-10-batches-py/" in message
    assert f"looked in {folder}: missing data_batch_3" in message
    assert "NNI_BIO_DATA" in message and "--data-dir" in message and "never downloads" in message


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagenet16-120", "fashion-mnist", "imagenet"])
def test_missing_data_dir_is_explained(name: str) -> None:
    with pytest.raises(DataError, match="No data directory given"):
        get_dataset(name, "train")


def test_env_var_and_pointing_at_the_subfolder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_cifar10(tmp_path, n=4)
    monkeypatch.setenv("NNI_BIO_DATA", str(tmp_path))
    assert len(get_dataset("cifar10", "test")) == 4
    assert len(get_dataset("cifar10", "test", folder)) == 4  # the cifar-10-batches-py folder itself


@pytest.mark.parametrize("change, message", [
    (lambda d, y: (d[:, :3000], y), r"'data' has shape \(4, 3000\), expected \(N, 3072\)"),
    (lambda d, y: (d.astype(np.float32), y), "'data' has dtype float32, expected uint8"),
    (lambda d, y: (d, y[:3]), "4 rows of 'data' but 3 entries in 'labels'"),
    (lambda d, y: (d, [0, 1, 2, 10]), r"'labels' must be in 0..9, found values 0..10"),
    (lambda d, y: (d.tolist(), y), "'data' must be a numpy array, found list"),
])
def test_malformed_batches_name_file_and_check(tmp_path: Path, change, message: str) -> None:
    folder = write_cifar10(tmp_path, n=4)
    batch = safe_load(folder / "data_batch_2")
    data, labels = change(batch["data"], batch["labels"])
    write_batch(folder / "data_batch_2", data, labels)
    with pytest.raises(DataError, match=f"data_batch_2: {message}"):
        get_dataset("cifar10", "train", tmp_path)


def test_non_dict_and_missing_keys(tmp_path: Path) -> None:
    from nni_bio.data.fixtures import write_pickle

    folder = write_imagenet16(tmp_path, n=4)
    write_pickle([1, 2, 3], folder / "val_data")
    with pytest.raises(DataError, match="val_data: expected a pickled dict, found list"):
        get_dataset("imagenet16-120", "test", tmp_path)
    write_pickle({"labels": [1]}, folder / "val_data")
    with pytest.raises(DataError, match="val_data: missing key 'data'"):
        get_dataset("imagenet16-120", "test", tmp_path)
    write_batch(folder / "val_data", np.zeros((1, 768), np.uint8), [0])
    with pytest.raises(DataError, match=r"'labels' must be in 1..1000, found values 0..0"):
        get_dataset("imagenet16-120", "test", tmp_path)


def test_imagenet_folder(tmp_path: Path) -> None:
    folder = write_imagenet_folder(tmp_path, classes=3, per_class=4, val_per_class=2, size=24)
    test = get_dataset("imagenet", "test", tmp_path, normalize=False)
    assert len(test) == 6 and test.classes == ["n00000000", "n00000001", "n00000002"]
    x, _ = test[0]
    assert x.min() >= 0 and x.max() <= 1
    train, val = get_dataset("imagenet", "train", tmp_path), get_dataset("imagenet", "val", tmp_path)
    assert len(train) + len(val) == 12 and not set(train.indices) & set(val.indices)
    (folder / "val" / "n00000002").rename(folder / "val" / "n99999999")
    with pytest.raises(DataError, match="class folders differ from train"):
        get_dataset("imagenet", "test", tmp_path)


def test_unknown_split_and_bad_cutout() -> None:
    with pytest.raises(DataError, match="unknown split 'valid'"):
        get_dataset("digits", "valid")
    with pytest.raises(DataError, match="cutout must be a non-negative int"):
        get_dataset("digits", "train", cutout=-1)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="dataset-fashion-mnist not installed")
def test_real_debian_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", Path("/usr/share/datasets/fashion-mnist"))
    train, val, test = (get_dataset("fashion-mnist", s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (55_000, 5_000, 10_000)
    assert np.bincount(test.labels).tolist() == [1_000] * 10 and np.bincount(val.labels).tolist() == [500] * 10
    x, y = train[0]
    assert tuple(x.shape) == (1, 28, 28) and 0 <= y < 10
    pixels = np.concatenate([train.images[:5000], val.images]).astype(np.float64) / 255
    assert abs(pixels.mean() - 0.2860) < 0.01 and abs(pixels.std() - 0.3530) < 0.01


def test_torchvision_rejects_the_fixture_that_our_reader_accepts(tmp_path: Path) -> None:
    from torchvision.datasets import CIFAR10

    write_cifar10(tmp_path, n=4)
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        CIFAR10(str(tmp_path), train=True, download=False)  # MD5-checks every batch
    assert len(get_dataset("cifar10", "test", tmp_path)) == 4
