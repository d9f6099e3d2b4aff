"""The study folder's run log (``runs.json``): when each run of ``nni-bio study`` started and ended.

A study is often killed and run again; its wall time is the sum over every run. Each run appends its
entry when it starts and moves the entry's ``end`` forward every few seconds while it works (a
heartbeat), so a run killed with ``kill -9`` still counts up to its last heartbeat. Report rebuilds
(``--report-only``) are logged but not counted.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with RunLog(folder, command="nni-bio study x.yml", counted=True, heartbeat=0.1):
    ...     pass
    >>> len(read_runs(folder)), wall_seconds(folder) >= 0
    (1, True)
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from nni_bio.core.safe_json import write_json

RUNS = "runs.json"
#: the record of studies made before the run log existed: one number, the total wall time
_LEGACY = "wall_seconds"


def read_runs(study_dir: Path) -> list[dict[str, Any]]:
    """Every run logged in ``study_dir``, oldest first (``start``, ``end``, ``command``, ``commit``, ``counted``)."""
    path = study_dir / RUNS
    if not path.is_file():
        legacy = study_dir / _LEGACY
        if legacy.is_file():  # a folder from before the run log: one run of that length, times unknown
            return [{"start": None, "end": None, "seconds": float(legacy.read_text()), "counted": True,
                     "command": "", "commit": None}]
        return []
    return json.loads(path.read_text())


def wall_seconds(study_dir: Path) -> float:
    """Wall time summed over the runs that ran stages (report rebuilds excluded), killed runs included."""
    return sum(_seconds(run) for run in read_runs(study_dir) if run.get("counted"))


def _seconds(run: dict[str, Any]) -> float:
    if run.get("start") is not None and run.get("end") is not None:
        return max(0.0, run["end"] - run["start"])
    return float(run.get("seconds") or 0.0)


class RunLog:
    """Context manager: log this run in ``study_dir/runs.json`` and keep its end time current."""

    def __init__(self, study_dir: Path, *, command: str, counted: bool, commit: str | None = None,
                 heartbeat: float = 5.0):
        self.study_dir, self.heartbeat = Path(study_dir), heartbeat
        self.entry = {"start": time.time(), "end": time.time(), "command": command, "commit": commit,
                      "counted": counted, "finished": False}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat, name="nni-bio study run log", daemon=True)

    def __enter__(self) -> RunLog:
        self._runs = read_runs(self.study_dir)
        self._runs.append(self.entry)
        self._write()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.entry["finished"] = exc[0] is None
        self._write()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                self._write()
            except OSError:  # a full disk must not kill the study from this thread; the next beat tries again
                pass

    def _write(self) -> None:
        with self._lock:
            self.entry["end"] = time.time()
            write_json(self.study_dir / RUNS, self._runs)


def runs_table(study_dir: Path) -> list[str]:
    """Markdown lines: one row per run (start, end, minutes, commit), and a warning when commits differ."""
    runs = read_runs(study_dir)
    if not runs:
        return []
    stamp = lambda t: "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))  # noqa: E731
    lines = ["| run | started | ended | minutes | counted | commit | ended how |", "|---|---|---|---|---|---|---|"]
    for i, run in enumerate(runs, 1):
        how = "finished" if run.get("finished") else ("killed or interrupted (last heartbeat)" if run.get("start")
                                                      else "before the run log")
        lines.append(f"| {i} | {stamp(run.get('start'))} | {stamp(run.get('end'))} | {_seconds(run) / 60:.1f} | "
                     f"{'yes' if run.get('counted') else 'no (report only)'} | {run.get('commit') or '-'} | {how} |")
    commits = {run.get("commit") for run in runs if run.get("counted") and run.get("commit")}
    if len(commits) > 1:
        lines += ["", f"**Warning:** the stages of this study ran on {len(commits)} different commits "
                  f"({', '.join(sorted(commits))}); numbers from different code may not be comparable."]
    return lines


__all__ = ["RUNS", "RunLog", "read_runs", "runs_table", "wall_seconds"]
