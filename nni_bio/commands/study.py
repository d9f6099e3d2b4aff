"""``nni-bio study CONFIG.yml``: search every arm, retrain, attack, report, in one resumable command.

Examples::

    nni-bio study examples/studies/digits.yml --jobs 2
    nni-bio study examples/studies/fashion-mnist.yml --jobs 2 --report-dir results/fashion-mnist
    nni-bio study examples/studies/digits.yml --report-only     # rebuild the report from the study folder

Run the same command again after a crash or ``kill -9``: finished stages are kept, unfinished ones
continue. Exit status: 0 when every stage finished, 3 when the report was written but some stage
failed, was skipped or has not run (listed on stderr), 2 for a bad study file or folder. The study
folder (``--output``, default ``runs/studies/<name>``) belongs to its config: a different config is
refused.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


#: exit status of a study that wrote its report but has failed, skipped or unrun stages (2: bad input)
EXIT_INCOMPLETE = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("study", help="compare rule sets end to end: search, retrain, attack, report",
                              description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("config", help="study YAML, e.g. examples/studies/digits.yml")
    p.add_argument("--output", default=None, help="study folder (default: runs/studies/<name>)")
    p.add_argument("--jobs", type=int, default=1, help="stages run at once (arms and seeds in parallel); one GPU "
                   "each where GPUs exist, else the CPU cores are split between them")
    p.add_argument("--report-dir", default=None, help="where report.md, the CSVs and PNGs go (default: <output>/report)")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from the study folder")
    p.add_argument("--retry-failed", action="store_true", help="run failed stages again (default: keep their failure)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (also off when stderr is no TTY)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from nni_bio.nas import _compat
    from nni_bio.study import StudyIncomplete, load_study, run_study

    _compat.filter_warnings()
    if args.jobs < 1:
        from nni_bio.core.errors import NniBioError

        raise NniBioError("--jobs must be at least 1")
    config = load_study(args.config)
    output = Path(args.output or Path("runs") / "studies" / config.name)
    command = "nni-bio study " + shlex.join(sys.argv[2:] if len(sys.argv) > 2 else [args.config])
    try:
        report = run_study(config, output, jobs=args.jobs, report_dir=args.report_dir, report_only=args.report_only,
                           progress=not args.no_progress and sys.stderr.isatty(), retry_failed=args.retry_failed,
                           command=command, say=lambda line: print(line, flush=True))
    except StudyIncomplete as exc:
        print(f"report: {exc.report}")
        print(f"nni-bio study: error: {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE
    print(f"report: {report}")
    first = next((line for line in report.read_text().splitlines() if line.startswith("**") or line.startswith("No ")), "")
    if first:
        print(first.replace("**", ""))
    return 0
