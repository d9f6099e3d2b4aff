"""Where user copies of the data sets are looked for, and the error when none is there.

A data set ``X`` with sub-folder ``S`` is looked for in ``<data_dir>/S`` (``data_dir`` given to
``get_dataset`` or ``--data-dir``, else ``$NNI_BIO_DATA``), and in ``data_dir`` itself when that
folder is named ``S`` (pointing straight at it works too). Some data sets add fixed locations
(Debian's ``/usr/share/datasets/fashion-mnist``). Nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from nni_bio.data._api import DATA_DIR_ENV, DataError


def candidates(data_dir: Path | None, subdirs: Sequence[str], fixed: Sequence[Path] = ()) -> list[Path]:
    """The folders to look in, in order: ``<data_dir>/<subdir>`` for each subdir, then ``fixed``."""
    found: list[Path] = []
    if data_dir is not None:
        if data_dir.name in subdirs:
            found.append(data_dir)
        found += [data_dir / sub for sub in subdirs]
    found += [Path(p) for p in fixed]
    return list(dict.fromkeys(found))


def missing_files(folder: Path, required: Sequence[str],
                  exists: Callable[[Path, str], bool] | None = None) -> list[str]:
    """The names in ``required`` that ``folder`` lacks (``exists(folder, name)`` decides; default: a file)."""
    exists = exists or (lambda d, n: (d / n).is_file())
    return [name for name in required if not exists(folder, name)]


def find_folder(name: str, data_dir: Path | None, subdirs: Sequence[str], required: Sequence[str], *,
                fixed: Sequence[Path] = (), exists: Callable[[Path, str], bool] | None = None,
                how_to_get: str = "") -> Path:
    """The first candidate folder holding every file in ``required``.

    Raises:
        DataError: listing the expected files, every folder looked in with what it lacks, and how
            to point nni-bio at a copy.
    """
    looked = candidates(data_dir, subdirs, fixed)
    lacks = {}
    for folder in looked:
        if folder.is_dir():
            missing = missing_files(folder, required, exists)
            if not missing:
                return folder
            lacks[folder] = f"missing {', '.join(missing)}"
        else:
            lacks[folder] = "no such folder"
    expected = f"{', '.join(required)} in <data_dir>/{subdirs[0]}/"
    lines = [f"data set {name!r} not found: expected {expected}"]
    if data_dir is None:
        lines.append(f"No data directory given (neither data_dir= / --data-dir nor ${DATA_DIR_ENV} is set).")
    elif not data_dir.is_dir():
        lines.append(f"The data directory {data_dir} does not exist.")
    lines += [f"  looked in {folder}: {why}" for folder, why in lacks.items()]
    lines.append(f"Point at the folder that contains {subdirs[0]}/ with get_dataset(..., data_dir=DIR), "
                 f"`nni-bio data check {name} --data-dir DIR` or the {DATA_DIR_ENV} environment variable. "
                 "nni-bio never downloads data by itself." + (f" {how_to_get}" if how_to_get else ""))
    from nni_bio.data.download import SOURCES

    if name in SOURCES:
        lines.append(f"Online? `nni-bio data download {name} --data-dir DIR` fetches the official files.")
    raise DataError("\n".join(lines))
