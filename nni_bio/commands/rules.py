"""``nni-bio rules``: the available learning rules and where they come from."""

from __future__ import annotations

import argparse

from nni_bio._registry import get_rule, rule_sources


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("rules", help="list the available learning rules and their providers")
    parser.add_argument("--names", action="store_true", help="print only the names, one per line")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    sources = rule_sources()
    if args.names:
        print("\n".join(sources))
        return 0
    rows = [("name", "family", "provider", "api", "summary")]
    for name, source in sources.items():
        info = get_rule(name).info
        rows.append((name, info.family, f"{source.distribution} {source.version}".strip(), str(info.api_version), info.summary))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4])
    return 0
