"""One runner per study folder: an exclusive lock held for the whole run.

``nni-bio study`` (and ``--report-only``) takes ``<study>/.lock`` with ``flock``; a second runner on
the same folder is refused with the first one's PID and command. The kernel drops the lock when its
holder dies, however it dies (``kill -9`` included), so a lock file left by a killed run is taken
over at once, with a note naming the run that left it.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with StudyLock(folder, command="nni-bio study x.yml"):
    ...     (folder / ".lock").is_file()
    True
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nni_bio.core.errors import NniBioError

LOCK = ".lock"


class StudyBusyError(NniBioError):
    """Another process is running a study (or rebuilding its report) in the same folder."""


class StudyLock:
    """Context manager: hold ``study_dir/.lock`` exclusively, or raise :class:`StudyBusyError`."""

    def __init__(self, study_dir: Path, *, command: str, say: Callable[[str], None] = print):
        self.path = Path(study_dir) / LOCK
        self.command, self.say = command, say
        self._file: Any = None

    def __enter__(self) -> StudyLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115  (held until __exit__)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(self.path)
            handle.close()
            raise StudyBusyError(
                f"{self.path.parent} is in use by another nni-bio study run (PID {holder.get('pid', '?')}, started "
                f"{_when(holder.get('started'))}: {holder.get('command') or 'command unknown'}). Wait for it to end, or "
                f"stop it (kill {holder.get('pid', 'PID')}), then run this again; nothing was changed") from None
        before = _holder(self.path)
        if before.get("pid") and before.get("pid") != os.getpid():
            self.say(f"note: taking over the lock of an earlier run that ended without releasing it (PID "
                     f"{before['pid']}, started {_when(before.get('started'))}, killed or crashed)")
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "command": self.command, "started": time.time()}) + "\n")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc: object) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            handle.seek(0)
            handle.truncate()  # a clean exit leaves no holder behind: the next run sees no note to make
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


def _holder(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text().strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "at an unknown time"


__all__ = ["StudyBusyError", "StudyLock"]
