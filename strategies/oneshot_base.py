"""Moved: :mod:`nni_bio.strategies.oneshot.search` (everything one-shot is in the package
``nni_bio.strategies.oneshot``). This alias goes in a later release."""

import warnings

from nni_bio.strategies.oneshot.search import *  # noqa: F403
from nni_bio.strategies.oneshot.search import (  # noqa: F401
    EpochRecord,
    OneShotConfig,
    OneShotStrategy,
    Search,
    frozen,
    recalibrated_evaluate,
)

warnings.warn("nni_bio.strategies.oneshot_base moved to nni_bio.strategies.oneshot.search", FutureWarning,
              stacklevel=2)
