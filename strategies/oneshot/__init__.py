"""One-shot search: the whole search in one process, over a supernet holding every candidate.

Everything one-shot lives in this package:

==================  ===========================================================================
module              what
==================  ===========================================================================
``loop``            :func:`run_oneshot`: the search loop, checkpoints and resume, the strategy
                    registry (:data:`STRATEGIES`), :func:`retrain_derived`
``search``          what every strategy shares: :class:`OneShotConfig`, the search state
                    (data split, weight step, evaluation) and the :class:`OneShotStrategy` hooks
``trial``           the NNI trial entry point: ``python -m nni_bio.strategies.oneshot.trial``
                    (a whole search as one trial of ``nnictl``, examples/digits-darts.yml)
==================  ===========================================================================

The strategies themselves are :mod:`nni_bio.strategies.darts` (darts, darts2, gumbel),
:mod:`nni_bio.strategies.enas` and :mod:`nni_bio.strategies.egnas`; the supernet they share is
:mod:`nni_bio.strategies.supernet`.

Example:
    >>> from nni_bio.strategies.oneshot import run_oneshot
    >>> result = run_oneshot("tiny", "darts", "digits", epochs=1, train_limit=256,
    ...                      space_args={"width": 4}, arch_lr=3e-3)
    >>> sorted(result.sample)
    ['conv1', 'conv2', 'fc']
"""

from nni_bio.strategies.oneshot.loop import (
    CHEAP_RETRAIN,
    ONESHOT_CHECKPOINT_VERSION,
    RESUME_KEYS,
    STRATEGIES,
    OneShotResult,
    default_retrain_epochs,
    make_strategy,
    retrain_derived,
    run_oneshot,
    strategy_class,
)
from nni_bio.strategies.oneshot.search import EpochRecord, OneShotConfig, OneShotStrategy, Search

__all__ = ["CHEAP_RETRAIN", "ONESHOT_CHECKPOINT_VERSION", "RESUME_KEYS", "STRATEGIES", "EpochRecord", "OneShotConfig",
           "OneShotResult", "OneShotStrategy", "Search", "default_retrain_epochs", "make_strategy", "retrain_derived",
           "run_oneshot", "strategy_class"]
