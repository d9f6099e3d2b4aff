"""The ``nni-bio`` command line.

Each sub-command lives in its own module under ``nni_bio.commands`` and exposes
``register(subparsers)``; this file only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from nni_bio.core.errors import NniBioError, OutputWriteError, write_failure

#: sub-command modules, in the order ``nni-bio --help`` lists them
COMMANDS = ["rules", "search", "study", "export_space", "demo", "data", "train", "attack", "report", "new_rule",
            "setup_nni", "examples"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nni-bio", description="Neural-architecture search over bio-inspired learning rules.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"nni_bio.commands.{name}").register(subparsers)
    return parser


def describe_os_error(exc: OSError) -> str:
    """One line for an operating-system error that reached the command line: the file, the cause, the fix."""
    import errno

    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return str(write_failure(exc.filename or "an output file", exc))
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nni-bio`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except OutputWriteError as exc:  # the machine, not the input: exit status 1
        print(f"nni-bio {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except NniBioError as exc:
        print(f"nni-bio {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a folder that cannot be written, a full disk: one line, not a traceback
        print(f"nni-bio {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"nni-bio {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
