"""``run_study``: claim the folder, run every unfinished stage, write the report, say what is missing."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from nni_bio.core.errors import NniBioError
from nni_bio.study import stages
from nni_bio.study.config import StudyConfig, StudyConfigError
from nni_bio.study.folder_lock import StudyLock
from nni_bio.study.report import write_report
from nni_bio.study.run_log import RunLog, wall_seconds
from nni_bio.study.runner import Task, check_not_foreign, claim_folder, current_commit, execute, plan


class StudyIncomplete(NniBioError):
    """The report was written, but some stages failed, were skipped or have not run.

    ``report`` is the report's path; ``stages`` maps each unfinished stage to its reason.
    """

    def __init__(self, report: Path, unfinished: dict[str, str]):
        self.report, self.stages = report, unfinished
        shown = "; ".join(f"{key}: {reason}" for key, reason in list(unfinished.items())[:8])
        more = f"; ... and {len(unfinished) - 8} more" if len(unfinished) > 8 else ""
        super().__init__(f"{len(unfinished)} stage(s) did not finish: {shown}{more}. The report ({report}) shows "
                         "what did; fix the cause, then run the same command with --retry-failed")


def run_study(config: StudyConfig, output: str | os.PathLike, *, jobs: int = 1, report_dir: str | os.PathLike | None = None,
              progress: bool = True, retry_failed: bool = False, report_only: bool = False, command: str = "",
              say: Callable[[str], None] = print) -> Path:
    """Run (or continue) the study in ``output``; return the report's path.

    Raises:
        StudyIncomplete: after writing the report, when any stage failed, was skipped or never ran.

    Example:
        >>> from nni_bio.study import load_study, run_study
        >>> run_study(load_study("examples/studies/digits.yml"), "runs/studies/digits", jobs=2)  # doctest: +SKIP
    """
    study_dir = Path(output)
    if not report_only:
        check_data(config)
    check_not_foreign(study_dir)
    with StudyLock(study_dir, command=command or f"nni-bio study {config.source}", say=say):
        claim_folder(config, study_dir)
        tasks = plan(config, study_dir, say)
        with RunLog(study_dir, command=command, counted=not report_only, commit=current_commit()):
            if not report_only:
                if command:
                    (study_dir / "command.txt").write_text(command + "\n")
                execute(tasks, jobs, progress=progress, say=say, retry_failed=retry_failed)
        report = write_report(config, study_dir, Path(report_dir) if report_dir else study_dir / "report",
                              wall_seconds=wall_seconds(study_dir), command=command)
    unfinished = _unfinished(tasks)
    if unfinished:
        raise StudyIncomplete(report, unfinished)
    return report


def check_data(config: StudyConfig) -> None:
    """The study's data set is where its stages will look (``data_dir``, else ``$NNI_BIO_DATA``), and usable."""
    from nni_bio.data import DataError, check_dataset

    if config.data_dir is not None and not Path(config.data_dir).is_dir():
        raise StudyConfigError(f"{config.source}: data_dir {config.data_dir!r} is not a folder: point it at the folder "
                               f"that holds your {config.dataset} copy (see `nni-bio data --help`)")
    try:
        check_dataset(config.dataset, config.data_dir)
    except DataError as exc:
        raise StudyConfigError(f"{config.source}: data set {config.dataset!r}: {exc}") from exc


def _unfinished(tasks: list[Task]) -> dict[str, str]:
    """Stage -> why it is not done: its failure, the failure it was skipped for, or "not run yet"."""
    missing = {}
    for task in tasks:
        if task.state == "done" or (task.state == "pending" and task.done()):
            continue
        if task.state in ("failed", "skipped"):
            missing[task.key] = f"{task.state} ({task.reason})"
        elif (failed := stages.failure(task.folder)) is not None:
            missing[task.key] = f"failed ({failed})"
        else:
            missing[task.key] = "not run yet"
    return missing


__all__ = ["StudyIncomplete", "check_data", "run_study"]
