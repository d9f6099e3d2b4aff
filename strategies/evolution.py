"""Regularized evolution (Real, Aggarwal, Huang & Le 2019, arXiv 1802.01548) as an NNI tuner that
keeps its population across ``nnictl resume``.

NNI's ``RegularizedEvolutionTuner`` forgets everything on resume: NNI starts the tuner afresh and
replays the finished trials through :meth:`import_data`, which NNI's tuner does not implement, so a
resumed experiment draws a new random population and evaluates it again. :class:`EvolutionTuner` is
that tuner with :meth:`import_data`: every finished trial NNI replays joins the population in the
order NNI lists them (submission order; the population keeps the ``population_size`` most recent,
as aging does), takes the place of one random individual of the initial population not yet drawn,
and is never proposed again. A resumed search therefore continues with tournaments over the
finished trials. Results of trials that were running when the experiment stopped (NNI relaunches
them with their architecture) are imported when they arrive.

Differences to NNI's tuner, on purpose: it reads both search-space formats (NNI's NAS format,
``layer_choice``/``input_choice``, and the ``choice`` format that Random, TPE and
:class:`~nni_bio.strategies.policy_gradient.PolicyGradientTuner` read, ``nni-bio export-space --format choice``);
it draws from its own seeded generator (``seed``); with ``dedup`` (default) it proposes no
architecture it has already proposed or imported while new ones can be found (a mutation is redrawn
up to ``dedup_retries`` times, then taken as it is)::

    tuner:
      className: nni_bio.strategies.evolution.EvolutionTuner
      codeDirectory: .        # NNI 3.0 insists on the field for a className tuner; the class comes from the venv
      classArgs: {optimize_mode: maximize, population_size: 6, sample_size: 3, seed: 0}

Example:
    >>> tuner = EvolutionTuner(population_size=2, sample_size=1, seed=0)
    >>> tuner.update_search_space({"fc": {"_type": "choice", "_value": ["fa", "usf", "kp"]}})
    >>> tuner.import_data([{"parameter": {"fc": "usf"}, "value": 0.9}])   # what nnictl resume sends
    >>> [i.parameters for i in tuner.population], len(tuner.initial_population)
    ([{'fc': 'usf'}], 1)
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
from typing import Any

from nni import NoMoreTrialError
from nni.algorithms.hpo.regularized_evolution_tuner import FinishedIndividual, RegularizedEvolutionTuner
from nni.utils import OptimizeMode, extract_scalar_reward

__all__ = ["EvolutionTuner"]

_logger = logging.getLogger(__name__)

_TYPES = ("layer_choice", "input_choice", "choice")


def _unwrap(value: Any) -> Any:
    """``{"_value": v, "_idx": i}`` (NNI's NAS format) -> ``v``."""
    return value["_value"] if isinstance(value, dict) and "_value" in value else value


def _key(parameters: dict[str, Any]) -> str:
    return json.dumps({k: _unwrap(v) for k, v in parameters.items()}, sort_keys=True)


class EvolutionTuner(RegularizedEvolutionTuner):
    """Regularized evolution whose population survives ``nnictl resume`` (see the module docstring).

    Args:
        optimize_mode: ``"maximize"`` (accuracy) or ``"minimize"`` (loss).
        population_size: individuals kept (the oldest leaves when a new result arrives), and the size
            of the random initial population.
        sample_size: tournament size: the best of ``sample_size`` random individuals is mutated.
        dedup: propose no architecture already proposed or imported while a new one can be found.
        dedup_retries: mutations (or random draws) tried before a duplicate is accepted.
        seed: seed of the tuner's generator (``None``: fresh entropy).
    """

    def __init__(self, optimize_mode: str = "maximize", population_size: int = 100, sample_size: int = 25,
                 dedup: bool = True, dedup_retries: int = 50, seed: int | None = None):
        if population_size < 1 or sample_size < 1:
            raise ValueError(f"population_size and sample_size must be >= 1, got {population_size} and {sample_size}")
        super().__init__(optimize_mode, population_size, sample_size)
        self.dedup, self.dedup_retries, self.seed = bool(dedup), int(dedup_retries), seed
        self.rng = random.Random(seed)
        self.seen: set[str] = set()  # architectures proposed or imported
        self.evaluated = 0  # results received or imported
        self._waiting_imports: list[dict[str, Any]] = []

    # -- search space and individuals ---------------------------------------------------------------------------

    def update_search_space(self, search_space: dict[str, dict]) -> None:
        for label, spec in search_space.items():
            kind, values = spec.get("_type"), spec.get("_value")
            if kind not in _TYPES:
                raise ValueError(f"EvolutionTuner supports {', '.join(_TYPES)} parameters; {label!r} is {kind!r}. "
                                 "Export the space with `nni-bio export-space`.")
            if kind == "choice" and (not values or any(isinstance(v, dict) for v in values)):
                raise ValueError(f"{label!r}: choices must be a non-empty list of plain values (no nested spaces)")
        self.search_space = search_space
        self.initial_population.clear()
        self._generate_initial_population()
        if self._waiting_imports:
            waiting, self._waiting_imports = self._waiting_imports, []
            self.import_data(waiting)

    def _generate_initial_population(self) -> None:
        while len(self.initial_population) < self.population_size - self.evaluated:
            self.initial_population.append(self._new_random_model())

    def _mutate(self, key: str, individual: dict[str, Any]) -> None:
        spec = self.search_space[key]
        if spec["_type"] == "layer_choice":
            idx = self.rng.randrange(len(spec["_value"]))
            individual[key] = {"_value": spec["_value"][idx], "_idx": idx}
        elif spec["_type"] == "input_choice":
            candidates, n_chosen = spec["_value"]["candidates"], spec["_value"]["n_chosen"]
            idxs = [self.rng.randrange(len(candidates)) for _ in range(n_chosen)]
            individual[key] = {"_value": [candidates[k] for k in idxs], "_idx": idxs}
        else:
            individual[key] = self.rng.choice(spec["_value"])

    def _random_model(self) -> dict[str, Any]:
        individual: dict[str, Any] = {}
        for key in self.search_space:
            self._mutate(key, individual)
        return individual

    def _new_random_model(self) -> dict[str, Any]:
        pending = {_key(m) for m in self.initial_population}
        for _ in range(self.dedup_retries if self.dedup else 1):
            model = self._random_model()
            if _key(model) not in self.seen and _key(model) not in pending:
                break
        return model

    def _mutate_model(self, model: FinishedIndividual) -> dict[str, Any]:
        child = copy.deepcopy(model.parameters)
        self._mutate(self.rng.choice(list(child)), child)
        return child

    def _normalize(self, parameters: dict[str, Any]) -> dict[str, Any] | None:
        """Imported parameters in this tuner's format, or ``None`` if they are not in the space."""
        out: dict[str, Any] = {}
        for label, spec in self.search_space.items():
            if label not in parameters:
                return None
            value = _unwrap(parameters[label])
            if spec["_type"] == "layer_choice":
                if value not in spec["_value"]:
                    return None
                out[label] = {"_value": value, "_idx": spec["_value"].index(value)}
            elif spec["_type"] == "input_choice":
                candidates = spec["_value"]["candidates"]
                if not isinstance(value, list) or any(v not in candidates for v in value):
                    return None
                out[label] = {"_value": value, "_idx": [candidates.index(v) for v in value]}
            else:
                if value not in spec["_value"]:
                    return None
                out[label] = value
        return out

    # -- NNI tuner interface ------------------------------------------------------------------------------------

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        if self.initial_population:
            arch = self.initial_population.popleft()
            if self.dedup and _key(arch) in self.seen:  # imported since it was drawn
                arch = self._new_random_model()
            from_initial = True
        elif self.population:
            tournament = [self.rng.choice(list(self.population)) for _ in range(self.sample_size)]
            parent = max(tournament, key=lambda individual: individual.result)
            for _ in range(self.dedup_retries if self.dedup else 1):
                arch = self._mutate_model(parent)
                if _key(arch) not in self.seen:
                    break
            from_initial = False
        else:
            raise NoMoreTrialError("no population yet: the initial population is out and no result has come back")
        self.seen.add(_key(arch))
        self.history[parameter_id] = arch
        self._from_initial[parameter_id] = from_initial
        return arch

    def receive_trial_result(self, parameter_id: int, parameters: dict[str, Any], value: Any, **kwargs: Any) -> None:
        super().receive_trial_result(parameter_id, parameters, value, **kwargs)
        self.evaluated += 1

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        from_initial = self._from_initial.pop(parameter_id, False)
        if not success:
            self.history.pop(parameter_id, None)
            if from_initial:  # a failed random individual is replaced by another
                self.initial_population.append(self._new_random_model())

    def import_data(self, data: list[dict[str, Any]]) -> None:
        """Add finished trials (``nnictl resume``, ``nnictl experiment import``) to the population."""
        if self.search_space is None:
            self._waiting_imports.extend(data)
            return
        imported = 0
        for entry in data:
            parameters = self._normalize(entry.get("parameter") or {})
            if parameters is None:
                _logger.warning("skipping imported trial %s: not in the search space", entry.get("parameter"))
                continue
            try:
                reward = float(extract_scalar_reward(entry["value"]))
            except (KeyError, RuntimeError, TypeError, ValueError) as exc:
                _logger.warning("skipping imported trial %s: %s", parameters, exc)
                continue
            if not math.isfinite(reward):
                continue
            if self.optimize_mode == OptimizeMode.Minimize:
                reward = -reward
            self.population.append(FinishedIndividual(None, parameters, reward))
            if len(self.population) > self.population_size:
                self.population.popleft()
            self.seen.add(_key(parameters))
            self.evaluated += 1
            if self.initial_population:  # a finished trial takes the place of a random individual not yet drawn
                self.initial_population.popleft()
            imported += 1
        _logger.info("EvolutionTuner imported %d finished trials: population %d, initial individuals left %d",
                     imported, len(self.population), len(self.initial_population))
