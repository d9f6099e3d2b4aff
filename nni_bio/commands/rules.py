"""``nni-bio rules``: the available learning rules and where they come from.

Every rule that loads gets a row; a broken or colliding entry point gets a row too, with its error
in place of the summary (like pytest's plugin header), and the command exits with status 1.
"""

from __future__ import annotations

import argparse
import sys

from nni_bio.core._registry import RuleStatus, rule_report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("rules", help="list the available learning rules and their providers")
    parser.add_argument("--names", action="store_true", help="print only the names of the usable rules, one per line")
    parser.set_defaults(run=run)


def _row(status: RuleStatus) -> tuple[str, str, str, str, str]:
    provider = f"{status.source.distribution} {status.source.version}".strip()
    if status.rule is None:
        return status.name, "ERROR", provider, "-", " ".join(f"{type(status.error).__name__}: {status.error}".split())
    info = status.rule.info
    return status.name, info.family, provider, str(info.api_version), info.summary


def run(args: argparse.Namespace) -> int:
    report = rule_report()
    broken = [s for s in report if s.rule is None]
    if args.names:
        print("\n".join(s.name for s in report if s.rule is not None))
    else:
        rows = [("name", "family", "provider", "api", "summary")] + [_row(s) for s in report]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4])
    if broken:
        names = sorted({s.name for s in broken})
        print(f"nni-bio rules: {len(broken)} entry point(s) could not be used ({', '.join(names)}); "
              "fix or uninstall the plugin, or set NNI_BIO_BLOCK_PLUGINS=<distribution> to ignore it",
              file=sys.stderr)
        return 1
    return 0
