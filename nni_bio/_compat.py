"""Every shim nni-bio needs to run NNI 3.0 (archived upstream) on today's stack, in one place.

Call :func:`apply` before importing ``nni.nas``; it is idempotent. Each shim is covered by
``tests/test_compat.py``. See ``nni-notes.md`` §3-4 for the failures they fix.
"""

from __future__ import annotations

import copy
import sys
import warnings

_applied = False


def filter_warnings() -> None:
    """Silence NNI's harmless noise on torch 2.14 and setuptools' pkg_resources deprecation."""
    warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated.*")
    warnings.filterwarnings("ignore", message=".*'nni.nas.execution.training_service' found in sys.modules.*")


def alias_gym_to_gymnasium() -> None:
    """NNI's RL strategy imports the unmaintained ``gym``; tianshou 0.5.1 already brings gymnasium."""
    try:
        import gymnasium
        import gymnasium.spaces
    except ImportError:  # pragma: no cover - tianshou pulls gymnasium in
        return
    sys.modules.setdefault("gym", gymnasium)
    sys.modules.setdefault("gym.spaces", gymnasium.spaces)


def patch_raw_format_freeze() -> None:
    """GridSearch + raw model format: NNI keeps the shared sample dict by reference (nni-notes §3 row 5)."""
    from nni.nas.space.space import RawFormatModelSpace

    if getattr(RawFormatModelSpace.freeze, "_nni_bio_patched", False):
        return
    original = RawFormatModelSpace.freeze

    def freeze(self, sample):
        return original(self, copy.deepcopy(sample))

    freeze._nni_bio_patched = True
    RawFormatModelSpace.freeze = freeze


def patch_enas_concat_loader() -> None:
    """ENAS on pytorch-lightning >= 2.1: re-pack (batch, idx, dataloader_idx) (nni-notes §3 row 3)."""
    from nni.nas.oneshot.pytorch import _dataloader
    from pytorch_lightning.utilities.combined_loader import CombinedLoader

    if getattr(_dataloader.ConcatLoader, "_nni_bio_patched", False):
        return

    def __next__(self):
        batch, batch_idx, dataloader_idx = CombinedLoader.__next__(self)
        return (batch, batch_idx, dataloader_idx), batch_idx, dataloader_idx

    _dataloader.ConcatLoader.__next__ = __next__
    _dataloader.ConcatLoader._nni_bio_patched = True


def apply() -> None:
    """Apply every shim (idempotent). Import ``nni.nas`` only after this."""
    global _applied
    if _applied:
        return
    filter_warnings()
    alias_gym_to_gymnasium()
    patch_raw_format_freeze()
    patch_enas_concat_loader()
    _applied = True
