"""``nni-bio data``: validate a copy of a data set (``check``), show where each is looked for (``list``), or, for
users who are online and ask for it, fetch one (``download``: :mod:`nni_bio.data.download`).

``nni-bio data check cifar10 --data-dir ~/data`` reads every file of the copy that
``get_dataset("cifar10", ..., data_dir="~/data")`` would use, validates it, and prints the split
sizes, the number of classes and whether the files are the genuine data set (MD5s). An unusable
copy raises :class:`~nni_bio.data.DataError`, which ``nni-bio`` prints and exits 2 on.
"""

from __future__ import annotations

import argparse

from nni_bio.data import DATASETS, DataError, check_dataset
from nni_bio.data._api import DATA_DIR_ENV, resolve_data_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="check the offline data sets and where they are looked for",
                                   description="Offline data sets. Nothing is downloaded unless you run "
                                               "`nni-bio data download`.")
    actions = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    data_dir_help = f"folder holding the user copies (default: ${DATA_DIR_ENV})"

    check = actions.add_parser("check", help="validate a copy of a data set and report what was found")
    check.add_argument("name", metavar="NAME", help=f"one of: {', '.join(DATASETS)}")
    check.add_argument("--data-dir", metavar="DIR", help=data_dir_help)
    check.set_defaults(run=run_check)

    listing = actions.add_parser("list", help="list the data sets, where each is looked for, and whether it is found")
    listing.add_argument("--data-dir", metavar="DIR", help=data_dir_help)
    listing.set_defaults(run=run_list)

    fetch = actions.add_parser("download", help="fetch a data set's official archives (verified, resumable)")
    fetch.add_argument("name", metavar="NAME", help="cifar10, cifar100 or fashion-mnist")
    fetch.add_argument("--data-dir", metavar="DIR", required=True, help="where to put it (then pass it as --data-dir)")
    fetch.add_argument("--mirror", metavar="URL", help="fetch the same files from this base URL instead")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch.set_defaults(run=run_download)


def run_check(args: argparse.Namespace) -> int:
    print(check_dataset(args.name, args.data_dir).format())
    return 0


def run_download(args: argparse.Namespace) -> int:
    from nni_bio.data.download import download

    root = download(args.name, args.data_dir, mirror=args.mirror, progress=not args.no_progress)
    print(f"{args.name} is in {root}: use --data-dir {root}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir)
    print(f"data directory: {data_dir if data_dir is not None else f'(none: use --data-dir or ${DATA_DIR_ENV})'}")
    width = max(map(len, DATASETS))
    for name, info in DATASETS.items():
        try:
            status = f"found      {info.locate(data_dir)}"
        except DataError:
            looked = ", ".join(map(str, info.where(data_dir))) or "(nowhere: no data directory given)"
            status = f"not found  looked in {looked}"
        print(f"{name:<{width}}  {status}")
    return 0
