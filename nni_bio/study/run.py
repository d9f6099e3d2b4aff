"""``run_study``: claim the folder, run every unfinished stage, write the report."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from nni_bio.study.config import StudyConfig
from nni_bio.study.report import write_report
from nni_bio.study.runner import claim_folder, execute, plan


def run_study(config: StudyConfig, output: str | os.PathLike, *, jobs: int = 1, report_dir: str | os.PathLike | None = None,
              progress: bool = True, retry_failed: bool = False, report_only: bool = False, command: str = "",
              say: Callable[[str], None] = print) -> Path:
    """Run (or continue) the study in ``output``; return the report's path.

    Example:
        >>> from nni_bio.study import load_study, run_study
        >>> run_study(load_study("examples/studies/digits.yml"), "runs/studies/digits", jobs=2)  # doctest: +SKIP
    """
    study_dir = Path(output)
    claim_folder(config, study_dir)
    started = time.time()
    tasks = plan(config, study_dir, say)
    if not report_only:
        if command:
            (study_dir / "command.txt").write_text(command + "\n")
        execute(tasks, jobs, progress=progress, say=say, retry_failed=retry_failed)
    wall = _wall_time(study_dir, time.time() - started if not report_only else 0.0)
    report = write_report(config, study_dir, Path(report_dir) if report_dir else study_dir / "report",
                          wall_seconds=wall, command=command)
    failed = [t for t in tasks if t.state in ("failed", "skipped")]
    if failed:
        say(f"{len(failed)} stage(s) failed or were skipped (see the report): "
            + ", ".join(f"{t.key}" for t in failed[:8]) + ("..." if len(failed) > 8 else ""))
    return report


def _wall_time(study_dir: Path, this_run: float) -> float:
    """Wall time over every run of this study (kept in ``wall_seconds``), this one included."""
    record = study_dir / "wall_seconds"
    before = float(record.read_text()) if record.is_file() else 0.0
    total = before + this_run
    record.write_text(f"{total:.1f}\n")
    return total


__all__ = ["run_study"]
