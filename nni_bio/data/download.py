"""``nni-bio data download``: the one place nni-bio fetches data, only when a user asks for it.

Everything else in nni-bio reads local copies and never downloads (tests and CI included). For users who are
online, :func:`download` fetches a data set's official archives (or the same files from a ``mirror``) into
``data_dir``, where :func:`~nni_bio.data.get_dataset` then finds it:

- resumable: bytes go to ``<file>.part`` and a second run continues with an HTTP ``Range`` request;
- checksum-verified: a finished file whose MD5 is not the published one is deleted and the run fails, saying so;
- with a progress bar; archives are unpacked with torchvision's ``extract_archive``.

ImageNet needs an account (image-net.org) and ImageNet16-120 is distributed by NAS-Bench-201 through a file
host without stable links: both are refused with where to get them.

Example:
    >>> sorted(SOURCES)
    ['cifar10', 'cifar100', 'fashion-mnist']
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from nni_bio.data._api import DataError

__all__ = ["NOT_DOWNLOADABLE", "SOURCES", "Source", "download"]


@dataclass(frozen=True)
class Source:
    """Files of one data set: ``{file name: md5}`` at ``base_url``, unpacked (archives) into ``subdir``."""

    base_url: str
    files: dict[str, str]
    subdir: str = ""  # where plain files go under data_dir ("" for archives, which carry their own folder)
    extract: bool = True


SOURCES: dict[str, Source] = {
    "cifar10": Source("https://www.cs.toronto.edu/~kriz", {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"}),
    "cifar100": Source("https://www.cs.toronto.edu/~kriz",
                       {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"}),
    "fashion-mnist": Source("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com", {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }, subdir="fashion-mnist", extract=False),  # read as .gz, as published
}

NOT_DOWNLOADABLE = {
    "imagenet": "ImageNet needs an account at https://image-net.org (its terms of access); download ILSVRC2012 "
                "there and point --data-dir at it (see `nni-bio data list`).",
    "imagenet16-120": "ImageNet16 is distributed by NAS-Bench-201 (https://github.com/D-X-Y/NAS-Bench-201) through "
                      "a file host without stable links; download ImageNet16.tar there and extract it into DIR.",
    "digits": "digits ships with scikit-learn: there is nothing to download.",
}


def download(name: str, data_dir: str | os.PathLike, *, mirror: str | None = None, progress: bool = True,
             timeout: float = 60.0) -> Path:
    """Fetch ``name`` into ``data_dir`` (resuming a partial download), verify it, unpack it; return ``data_dir``."""
    if name in NOT_DOWNLOADABLE:
        raise DataError(f"nni-bio data download {name}: {NOT_DOWNLOADABLE[name]}")
    if name not in SOURCES:
        import difflib

        near = difflib.get_close_matches(name, [*SOURCES, *NOT_DOWNLOADABLE], 1)
        raise DataError(f"unknown data set {name!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                        + f"; downloadable: {', '.join(SOURCES)}")
    from torchvision.datasets.utils import check_integrity, extract_archive

    source = SOURCES[name]
    root = Path(data_dir).expanduser()
    folder = root / source.subdir
    folder.mkdir(parents=True, exist_ok=True)
    base = (mirror or source.base_url).rstrip("/")
    for filename, md5 in source.files.items():
        target = folder / filename
        if not check_integrity(str(target), md5):
            _fetch(f"{base}/{filename}", target, progress=progress, timeout=timeout)
            if not check_integrity(str(target), md5):
                target.unlink()
                raise DataError(f"{filename} from {base} is not the published file (its MD5 is not {md5}); it was "
                                "deleted. Run the command again, or try another --mirror.")
        if source.extract:
            extract_archive(str(target), str(root))
    return root


def _fetch(url: str, target: Path, *, progress: bool, timeout: float) -> None:
    """Download ``url`` to ``target`` through ``target.part``, continuing a partial one with ``Range``."""
    from tqdm import tqdm

    if url.split(":", 1)[0] not in ("http", "https"):
        raise DataError(f"{url}: only http and https URLs are fetched (check --mirror)")
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "nni-bio", **({"Range": f"bytes={have}-"} if have
                                                                               else {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) URLs only)
            if have and response.status != 206:  # the server ignores Range: start again
                have = 0
            size = response.length
            total = have + size if size is not None else None
            with part.open("ab" if have else "wb") as out, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True, desc=target.name, disable=not progress) as bar:
                got = 0
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            if size is not None and got < size:
                raise HTTPException(f"the connection closed after {got:,} of {size:,} bytes")
    except (urllib.error.URLError, HTTPException, TimeoutError, OSError) as exc:
        got = part.stat().st_size if part.is_file() else 0
        raise DataError(f"downloading {url} stopped after {got:,} bytes ({exc}); run the same command again to "
                        "continue where it stopped") from exc
    part.replace(target)
