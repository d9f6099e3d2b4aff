"""Official MD5s of the data-set files, and whether a copy matches them.

A mismatch is *reported*, never an error: data in the right format (a subset, a re-export, a test
fixture) is usable, but results on it are not comparable with published numbers. Sources:
torchvision 0.29.1 (CIFAR, Fashion-MNIST ``.gz``), xautodl (ImageNet16); see docs/data.md §2.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

OFFICIAL_MD5: dict[str, dict[str, str]] = {
    "cifar10": {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
    "cifar100": {
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
    "imagenet16-120": {
        "train_data_batch_1": "27846dcaa50de8e21a7d1a35f30f0e91",
        "train_data_batch_2": "c7254a054e0e795c69120a5727050e3f",
        "train_data_batch_3": "4333d3df2e5ffb114b05d2ffc19b1e87",
        "train_data_batch_4": "1620cdf193304f4a92677b695d70d10f",
        "train_data_batch_5": "348b3c2fdbb3940c4e9e834affd3b18d",
        "train_data_batch_6": "6e765307c242a1b3d7d5ef9139b48945",
        "train_data_batch_7": "564926d8cbf8fc4818ba23d2faac7564",
        "train_data_batch_8": "f4755871f718ccb653440b9dd0ebac66",
        "train_data_batch_9": "bb6dd660c38c58552125b1a92f86b5d4",
        "train_data_batch_10": "8f03f34ac4b42271a294f91bf480f29b",
        "val_data": "3410e3017fdaefba8d5073aaa65e4bd6",
    },
    # the .gz files as published (torchvision's list); Debian re-compressed them, see PAYLOAD_MD5
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

#: MD5 of the *decompressed* IDX payloads, so uncompressed or re-compressed copies can be recognised.
#: Computed from Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1 (the standard data decoded).
PAYLOAD_MD5: dict[str, dict[str, str]] = {
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}

TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet16-120": "ImageNet16",
          "fashion-mnist": "Fashion-MNIST"}
FORMATS = {"cifar10": "CIFAR-format", "cifar100": "CIFAR-format", "imagenet16-120": "ImageNet16-format",
           "fashion-mnist": "IDX-format"}


def md5_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class ChecksumStatus:
    """How a set of files compares with the official MD5s."""

    genuine: bool
    matched: tuple[str, ...]
    differ: tuple[str, ...]
    summary: str


def compare(name: str, digests: dict[str, str], table: dict[str, str] | None = None) -> ChecksumStatus:
    """Compare ``{file name: md5}`` with the official table of data set ``name``.

    Only files present in both are compared; the copy is genuine when all of them match.
    """
    table = OFFICIAL_MD5[name] if table is None else table
    checked = [f for f in digests if f in table]
    matched = tuple(f for f in checked if digests[f] == table[f])
    differ = tuple(f for f in checked if digests[f] != table[f])
    title, fmt = TITLES.get(name, name), FORMATS.get(name, "same-format")
    if checked and not differ:
        summary = f"genuine {title} ({len(matched)}/{len(checked)} files match the official MD5s)"
    else:
        shown = ", ".join(differ[:4]) + (", ..." if len(differ) > 4 else "")
        summary = (f"{fmt} data, not the official {title} files (MD5 differs for {shown}); usable, "
                   "but results are not comparable with published numbers")
    return ChecksumStatus(bool(checked) and not differ, matched, differ, summary)


def digests_of(folder: Path, names: Iterable[str]) -> dict[str, str]:
    """``{name: md5}`` for each name that is a file in ``folder``."""
    return {n: md5_file(folder / n) for n in names if (folder / n).is_file()}
