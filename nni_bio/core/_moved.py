"""Old import paths that keep working for one release: the module left behind warns and forwards."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def forward(old: str, new: str) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Warn (``FutureWarning``, at the importer's line) that ``old`` is now ``new``; return the module-level
    ``__getattr__`` and ``__dir__`` that hand out ``new``'s objects, the very same ones."""
    moved = importlib.import_module(new)
    warnings.warn(f"{old} has moved to {new}: import from there (or from nni_bio); the old name goes in the next "
                  "release", FutureWarning, stacklevel=3)
    return (lambda name: getattr(moved, name)), (lambda: dir(moved))
