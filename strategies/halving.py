"""Successive halving (Jamieson & Talwalkar 2016; the inner loop of Hyperband, Li et al. 2018) as an NNI tuner:
many cheap candidates are screened at a low number of epochs, the best ``1/eta`` of each rung are trained again
(from scratch) with ``eta`` times more, up to the top rung.

Each proposal carries its budget as ``TRIAL_BUDGET`` (epochs), the key NNI's Hyperband and BOHB advisors use;
``python -m nni_bio.trial`` trains for that many epochs and never mistakes the key for an architecture slot::

    tuner:
      className: nni_bio.strategies.halving.SuccessiveHalvingTuner
      codeDirectory: .        # NNI 3.0 insists on the field for a className tuner; the class comes from the venv
      classArgs: {optimize_mode: maximize, rungs: [1, 3, 9], population: 9, seed: 0}

The schedule is fixed by the arguments and the seed: rung 0 holds ``population`` distinct random networks of
the ``choice`` search space (``nni-bio export-space SPACE --format choice``), rung ``k + 1`` the best
``ceil(n_k / eta)`` of rung ``k`` (``eta`` defaults to the ratio of consecutive rungs). Networks in ``always``
(a study's corners: the one-rule networks) are trained at every rung and never halved away, so at the top rung
the search has seen them at its own highest fidelity. A rung starts when every trial of the one below has
ended (a failed trial ranks last). :meth:`total_trials` is the number of trials the schedule runs: give
``maxTrialNumber`` at least that.

Resuming (``nnictl resume``) replays the finished trials through :meth:`import_data`; a proposal whose network
and budget already have a result is not run again, and the same seed draws the same rung 0.

Example:
    >>> tuner = SuccessiveHalvingTuner(rungs=[1, 3], population=4, eta=2, seed=0)
    >>> tuner.update_search_space({"fc": {"_type": "choice", "_value": ["fa", "usf", "kp", "dfa"]}})
    >>> tuner.total_trials(), [tuner.generate_parameters(i)["TRIAL_BUDGET"] for i in range(4)]
    (6, [1, 1, 1, 1])
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Sequence
from typing import Any

from nni import NoMoreTrialError
from nni.tuner import Tuner
from nni.utils import OptimizeMode, extract_scalar_reward

__all__ = ["BUDGET_KEY", "SuccessiveHalvingTuner", "rung_schedule"]

_logger = logging.getLogger(__name__)

#: the parameter that carries a trial's budget in epochs (the name NNI's Hyperband and BOHB advisors use)
BUDGET_KEY = "TRIAL_BUDGET"


def _key(parameters: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in parameters.items() if k != BUDGET_KEY}, sort_keys=True)


def rung_schedule(population: int, rungs: int, eta: float, always: int = 0) -> list[int]:
    """Trials per rung: ``population`` halved by ``eta`` per rung (at least 1), plus ``always`` at every rung.

    Example:
        >>> rung_schedule(9, 3, 3), rung_schedule(9, 3, 3, always=2)
        ([9, 3, 1], [11, 5, 3])
    """
    counts, n = [], population
    for _ in range(rungs):
        counts.append(n + always)
        n = max(1, math.ceil(n / eta)) if n else 0
    return counts


class SuccessiveHalvingTuner(Tuner):
    """Synchronous successive halving over a ``choice`` search space (see the module docstring).

    Args:
        optimize_mode: ``"maximize"`` (accuracy) or ``"minimize"`` (loss).
        rungs: epochs of each rung, increasing (e.g. ``[1, 3, 9]``).
        population: random networks in rung 0.
        eta: halving rate (default: ``rungs[1] / rungs[0]``, or 3 with one rung).
        always: networks (``{label: value}``) trained at every rung and never halved away.
        seed: seed of the generator that draws rung 0 (``None``: fresh entropy).
    """

    def __init__(self, optimize_mode: str = "maximize", rungs: Sequence[int] = (1, 3, 9), population: int = 9,
                 eta: float | None = None, always: Sequence[dict[str, Any]] = (), seed: int | None = None):
        rungs = [int(r) for r in rungs]
        if not rungs or any(r < 1 for r in rungs) or any(b <= a for a, b in zip(rungs, rungs[1:])):
            raise ValueError(f"rungs must be increasing epochs >= 1, e.g. [1, 3, 9]; got {rungs}")
        if population < 1:
            raise ValueError(f"population must be >= 1, got {population}")
        self.eta = float(eta) if eta is not None else (rungs[1] / rungs[0] if len(rungs) > 1 else 3.0)
        if self.eta <= 1:
            raise ValueError(f"eta must be > 1, got {self.eta}")
        self.optimize_mode = OptimizeMode(optimize_mode)
        self.rungs, self.population, self.seed = rungs, int(population), seed
        self.always = [dict(a) for a in always]
        self.rng = random.Random(seed)
        self.search_space: dict[str, Any] | None = None
        self.rung = 0
        self.queue: list[dict[str, Any]] = []  # proposals of the current rung not yet handed out
        self.members: list[dict[str, Any]] = []  # the current rung's networks (without budget)
        self.scores: dict[tuple[str, int], float] = {}  # (network, epochs) -> reward (higher is better)
        self.pending: dict[int, dict[str, Any]] = {}  # parameter id -> proposal handed out, not ended
        self.credit: list[int] = []  # parameter ids NNI asked for while the rung was waiting
        self._callback = None

    # -- schedule --------------------------------------------------------------------------------------------------

    def total_trials(self) -> int:
        """Trials of the whole schedule (fewer when the space has fewer distinct networks than ``population``)."""
        population = self.population if self.search_space is None else max(
            0, min(self.population, self._space_size() - len({_key(a) for a in self.always})))
        return sum(rung_schedule(population, len(self.rungs), self.eta, len(self.always)))

    def _space_size(self) -> int:
        return math.prod(len(spec["_value"]) for spec in (self.search_space or {}).values())

    def update_search_space(self, search_space: dict[str, Any]) -> None:
        for label, spec in search_space.items():
            if spec.get("_type") != "choice" or not spec.get("_value"):
                raise ValueError(f"SuccessiveHalvingTuner reads the choice format: {label!r} is {spec.get('_type')!r}. "
                                 "Export the space with `nni-bio export-space SPACE --format choice`.")
        self.search_space = search_space
        always = {_key(a) for a in self.always}
        networks: dict[str, dict[str, Any]] = {}
        wanted = max(0, min(self.population, self._space_size() - len(always)))
        while len(networks) < wanted:
            network = {label: self.rng.choice(spec["_value"]) for label, spec in search_space.items()}
            if _key(network) not in always:
                networks.setdefault(_key(network), network)
        self._start_rung(0, list(networks.values()))

    def _start_rung(self, rung: int, networks: list[dict[str, Any]]) -> None:
        self.rung, self.members = rung, networks
        epochs = self.rungs[rung]
        self.queue = [{**n, BUDGET_KEY: epochs} for n in [*networks, *self.always]
                      if (_key(n), epochs) not in self.scores]
        _logger.info("successive halving: rung %d, %d networks x %d epochs (%d already done)", rung,
                     len(networks) + len(self.always), epochs, len(networks) + len(self.always) - len(self.queue))

    def _advance(self) -> None:
        """Start the next rungs while the current one is complete (all results in, nothing handed out)."""
        while not self.queue and not self.pending and self.rung + 1 < len(self.rungs):
            epochs = self.rungs[self.rung]
            ranked = sorted(self.members, key=lambda n: -self.scores.get((_key(n), epochs), -math.inf))
            self._start_rung(self.rung + 1, ranked[:max(1, math.ceil(len(ranked) / self.eta))])

    # -- NNI tuner interface ---------------------------------------------------------------------------------------

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        if "st_callback" in kwargs:
            self._callback = kwargs["st_callback"]
        self._advance()
        if not self.queue:
            if self.pending:  # the rung waits for its results; the proposal is sent when they are in
                self.credit.append(parameter_id)
            raise NoMoreTrialError("successive halving: the rung waits for its running trials" if self.pending
                                   else "successive halving: the schedule is complete")
        proposal = self.queue.pop(0)
        self.pending[parameter_id] = proposal
        return dict(proposal)

    def receive_trial_result(self, parameter_id: int, parameters: dict[str, Any], value: Any, **kwargs: Any) -> None:
        self._record(parameters, value)

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        proposal = self.pending.pop(parameter_id, None)
        if proposal is not None and (_key(proposal), proposal[BUDGET_KEY]) not in self.scores:
            self.scores[(_key(proposal), proposal[BUDGET_KEY])] = -math.inf  # failed: ranks last
        self._pay_credit()

    def _pay_credit(self) -> None:
        self._advance()
        while self.credit and self.queue and self._callback is not None:
            parameter_id = self.credit.pop(0)
            proposal = self.queue.pop(0)
            self.pending[parameter_id] = proposal
            self._callback(parameter_id, dict(proposal))

    def _record(self, parameters: dict[str, Any], value: Any) -> None:
        reward = float(extract_scalar_reward(value))
        if not math.isfinite(reward):
            reward = -math.inf
        if self.optimize_mode == OptimizeMode.Minimize:
            reward = -reward
        key = (_key(parameters), int(parameters.get(BUDGET_KEY, self.rungs[0])))
        self.scores[key] = max(reward, self.scores.get(key, -math.inf))

    def import_data(self, data: list[dict[str, Any]]) -> None:
        """Results of finished trials (``nnictl resume``): proposals that have one are not run again."""
        for entry in data:
            parameters = entry.get("parameter") or {}
            try:
                self._record({k: (v["_value"] if isinstance(v, dict) and "_value" in v else v)
                              for k, v in parameters.items()}, entry["value"])
            except (KeyError, RuntimeError, TypeError, ValueError) as exc:
                _logger.warning("skipping imported trial %s: %s", parameters, exc)
        if self.search_space is not None:
            self._start_rung(self.rung, self.members)
            self._advance()
