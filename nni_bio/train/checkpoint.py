"""Training checkpoints: written atomically, read without unpickling code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
``torch.load(path, weights_only=True)`` reads it: loading a checkpoint never runs code that came
with the file. Random-number states are stored in that form too (:func:`rng_state`).

:func:`save_checkpoint` writes to a temporary file in the same folder, flushes it to disk and
renames it over the old file with :func:`os.replace`, so a crash or a ``kill -9`` at any moment
leaves either the previous checkpoint or the new one, never a torn file.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from nni_bio.train.checkpoint import load_checkpoint, save_checkpoint
    >>> path = Path(tempfile.mkdtemp()) / "checkpoint.pt"
    >>> save_checkpoint(path, {"epoch": 3, "weights": torch.ones(2)})
    >>> load_checkpoint(path)["epoch"]
    3
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nni_bio.core.errors import NniBioError, write_failure

#: format version of the checkpoint dict written by :func:`nni_bio.train.training.train`
CHECKPOINT_VERSION = 1


class CheckpointError(NniBioError):
    """A checkpoint cannot be read or does not fit the run that wants to resume from it."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (temporary file, fsync, ``os.replace``).

    If anything fails (disk full, an unserializable value, an interrupt) the previous file at
    ``path`` is left untouched and the temporary file is removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_failure(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error(exc)  # torch's zip writer raises a RuntimeError while handling the OSError
        if isinstance(cause, OSError):
            raise write_failure(path, cause) from exc
        raise
    _fsync_dir(path.parent)


def _os_error(exc: BaseException) -> BaseException:
    """The OSError behind ``exc`` (torch's zip writer wraps it in a RuntimeError), else ``exc``."""
    seen = exc
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    return seen or exc


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``: tensors and plain data only.

    Raises:
        CheckpointError: the file is missing, truncated, or holds anything but plain data.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... depending on the damage
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}. It holds something other than tensors and "
                              f"plain data, or it is damaged; nni-bio never unpickles arbitrary objects.") from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} is not an nni-bio checkpoint (a {type(payload).__name__}, not a dict)")
    return payload


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every random-number state a training run consumes, as tensors and plain lists.

    torch (CPU and every CUDA device), numpy's legacy global generator, Python's ``random``, and
    optionally a ``torch.Generator`` (the DataLoader's, which drives the shuffling order).
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only where the same devices exist)."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"].cpu())


__all__ = ["CHECKPOINT_VERSION", "CheckpointError", "load_checkpoint", "rng_state", "save_checkpoint",
           "set_rng_state"]
