"""The ``nni-bio`` command line.

Each sub-command lives in its own module under ``nni_bio.commands`` and exposes
``register(subparsers)``; this file only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from nni_bio.errors import NniBioError

#: sub-command modules, in the order ``nni-bio --help`` lists them
COMMANDS = ["rules", "search", "study", "export_space", "demo", "data", "train", "attack", "report"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nni-bio", description="Neural-architecture search over bio-inspired learning rules.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"nni_bio.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nni-bio`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except NniBioError as exc:
        print(f"nni-bio {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nni-bio {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
