"""``nni-bio report RUN_DIR [RUN_DIR...]``: one Markdown report and one plot for several runs.

Reads each folder's ``result.json`` (``nni-bio train``) and ``attack.json`` (``nni-bio attack``)
and writes ``report.md`` (training table, attack tables per eps and gradient view) and
``report.png`` (accuracy vs eps: one panel per attack, a colour per run, a line style per view).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="Markdown table and accuracy-vs-eps plot over run folders",
                              description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="output folders of nni-bio train (+ attack)")
    p.add_argument("--output", default="report", help="folder for report.md and report.png (default: ./report)")
    p.add_argument("--title", default=None)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from nni_bio.evaluate.run_report import write_report

    md, png = write_report(args.run_dirs, args.output, title=args.title)
    print(md.read_text())
    print(f"written: {md}" + (f", {png}" if png else ""))
    return 0
