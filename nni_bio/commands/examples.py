"""``nni-bio examples DIR``: copy the example experiment configs, search-space files and study files.

After ``pip install nni-bio`` the examples are not in a checkout: they ship inside the package, and this
command puts them where ``nnictl create --config DIR/digits.yml`` and ``nni-bio study DIR/studies/digits.yml``
find them (each config's paths are relative to its own folder). Existing files are never overwritten.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from nni_bio.core.errors import NniBioError

#: what is copied: these files of the examples folder, and studies/*.yml (the example plugin is a distribution of
#: its own, in the repository)
SUFFIXES = (".yml", ".json", ".md", ".py")


def example_files() -> dict[str, bytes]:
    """Relative path -> content of every shipped example file."""
    root = resources.files("nni_bio.examples")
    found: dict[str, bytes] = {}
    for entry in root.iterdir():
        if entry.is_file() and entry.name.endswith(SUFFIXES) and not entry.name.startswith("__"):
            found[entry.name] = entry.read_bytes()
        elif entry.name == "studies" and entry.is_dir():
            found.update({f"studies/{f.name}": f.read_bytes() for f in entry.iterdir()
                          if f.is_file() and f.name.endswith(".yml")})
    return found


def copy_examples(directory: str | Path) -> list[Path]:
    """Write every example file under ``directory``; refuse (writing nothing) if any is already there.

    Example:
        >>> import tempfile
        >>> written = copy_examples(tempfile.mkdtemp())
        >>> any(p.name == "digits.yml" for p in written)
        True
    """
    target = Path(directory).expanduser()
    files = example_files()
    if not files:
        raise NniBioError("no example files found in this installation of nni-bio")
    taken = sorted(rel for rel in files if (target / rel).exists())
    if taken:
        raise NniBioError(f"{target} already holds {', '.join(taken[:5])}{' ...' if len(taken) > 5 else ''}: "
                          "nothing was written (choose an empty folder)")
    written = []
    for rel, data in sorted(files.items()):
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    return written


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("examples", help="copy the example configs and study files into a folder",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", help="where to put them (created if needed)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    written = copy_examples(args.dir)
    print(f"wrote {len(written)} files into {args.dir}; try:\n  nni-bio search {Path(args.dir) / 'digits.yml'}\n"
          f"  nni-bio study {Path(args.dir) / 'studies' / 'digits.yml'}")
    return 0
