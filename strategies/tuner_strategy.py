"""Any NNI HPO tuner as a NAS strategy, on every nni-bio space (cell spaces included).

NNI's :class:`~nni.nas.strategy.hpo.HPOTunerStrategy` (behind ``nni.nas.strategy.TPE``) asks every mutable
for ``as_legacy_dict()``, which the one-of-n input choices of cell spaces (DARTS, NB201) lack, and freezes the
tuner's plain input index where the space wants ``[index]``. :class:`TunerStrategy` gives the tuner the search
space that ``nni-bio export-space`` writes for nnictl (so a tuner sees the same space on both launch paths),
freezes ``[index]``, reports the plain index back, and does not wait a second per model on the sequential
engine.

Example:
    >>> from nni_bio.strategies.policy_gradient import PolicyGradientTuner
    >>> strategy = TunerStrategy(PolicyGradientTuner(seed=0))   # then NasExperiment(space, evaluator, strategy)
"""

from __future__ import annotations

import logging
import time

import nni
from nni.mutable import CategoricalMultiple
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.strategy.hpo import HPOTunerStrategy

from nni_bio.nas.mutables import search_space_json

__all__ = ["TunerStrategy"]

_logger = logging.getLogger(__name__)


class TunerStrategy(HPOTunerStrategy):
    """Wrap an HPO tuner (``generate_parameters`` / ``receive_trial_result`` / ``trial_end``) as a NAS strategy."""

    _inputs: frozenset[str] = frozenset()

    def _run(self) -> None:
        mutables = self.model_space.simplify()
        self._inputs = frozenset(label for label, mutable in mutables.items()
                                 if isinstance(mutable, CategoricalMultiple) and mutable.n_chosen == 1)
        with self._thread_lock:
            self.tuner.update_search_space(search_space_json(self.model_space))
        while self.engine.budget_available():
            if self.engine.idle_worker_available():
                with self._thread_lock:
                    try:
                        parameters = self.tuner.generate_parameters(self._model_count)
                    except nni.NoMoreTrialError:
                        _logger.warning("the tuner has no more architectures to propose; stopping")
                        break
                    model = self.model_space.freeze({k: [v] if k in self._inputs else v for k, v in parameters.items()})
                    self._model_to_id[model] = self._model_count
                    self._model_count += 1
                self.engine.submit_models(model)  # the sequential engine trains it here
            if not isinstance(self.engine, SequentialExecutionEngine):
                time.sleep(1.0)

    def on_metric(self, event) -> None:
        with self._thread_lock:
            model_id = self._model_to_id[event.model]
            sample = {k: v[0] if k in self._inputs and isinstance(v, list) else v
                      for k, v in (event.model.sample or {}).items()}
            self.tuner.receive_trial_result(model_id, sample, event.metric)
