"""Policy-gradient architecture search as an NNI tuner (REINFORCE, Williams 1992; the controller of Zoph & Le 2017
reduced to independent categorical distributions, one per label).

NNI's own ``PolicyBasedRL`` is a NAS *strategy*: it runs only from Python. This tuner does the same job through
``nnictl create`` (and from Python through ``nni.nas.strategy.HPOTunerStrategy``), over the ``choice`` search-space
JSON that Random and TPE read (``nni-bio export-space SPACE --format choice``)::

    tuner:
      className: nni_bio.strategies.policy_gradient.PolicyGradientTuner
      codeDirectory: .        # NNI 3.0 insists on the field for a className tuner; the class comes from the venv
      classArgs: {optimize_mode: maximize, learning_rate: 0.3, seed: 0}

The policy is one vector of logits per label. For a sampled architecture ``a`` with reward ``R`` (the trial's
final metric, negated when minimizing) the update is ``theta_l += lr * A * (onehot(a_l) - softmax(theta_l))``
with advantage ``A = R - b``; ``b`` is an exponential moving average of the rewards and, with
``normalize_advantage``, ``A`` is divided by a moving standard deviation, so the learning rate does not depend
on the metric's scale. An optional entropy bonus keeps the policy from collapsing early. Samples drawn while
other trials are still running (``trialConcurrency > 1``) are updated as if on-policy.

State (logits, baseline, step, random-generator state, history) is written as JSON after every update to
``<experiment dir>/checkpoint/policy_gradient_tuner.json`` (NNI gives the dispatcher that folder in
``NNI_CHECKPOINT_DIRECTORY``), or to ``state_file``; ``nnictl resume`` reloads it. :meth:`import_data`, which NNI
calls on resume with the finished trials, replays rewards the saved state does not already hold, so a resumed
tuner without a state file still learns from the earlier trials.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from nni import NoMoreTrialError
from nni.tuner import Tuner
from nni.utils import extract_scalar_reward

__all__ = ["PolicyGradientTuner", "STATE_FILE_NAME"]

_logger = logging.getLogger(__name__)

STATE_FILE_NAME = "policy_gradient_tuner.json"
_STATE_VERSION = 1
_SUPPORTED_TYPES = ("choice", "layer_choice")


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max())
    return z / z.sum()


def _unwrap(value: Any) -> Any:
    """``{"_value": v, "_idx": i}`` (NNI's NAS format) -> ``v``."""
    return value["_value"] if isinstance(value, dict) and "_value" in value else value


def _key(parameters: dict[str, Any]) -> str:
    return json.dumps({k: _unwrap(v) for k, v in parameters.items()}, sort_keys=True)


class PolicyGradientTuner(Tuner):
    """REINFORCE over independent categorical choices, with a moving-average baseline.

    Args:
        optimize_mode: ``"maximize"`` (accuracy) or ``"minimize"`` (loss).
        learning_rate: step size on the logits.
        baseline_decay: weight of the old value in the moving averages of reward and squared advantage.
        normalize_advantage: divide the advantage by the moving standard deviation of the rewards.
        entropy_weight: weight of the entropy bonus (0 disables it).
        failure_metric: what a failed trial (no final result) teaches: ``"worst"`` (the worst metric seen so far;
            nothing if none yet), ``"ignore"``, or a number taken as its metric.
        dedup: resample (up to ``dedup_retries`` times) architectures already tried or running.
        seed: seed of the sampler (``None``: fresh entropy).
        state_file: where to persist the policy; default ``$NNI_CHECKPOINT_DIRECTORY/policy_gradient_tuner.json``
            under nnictl, nowhere otherwise. An existing file is loaded.

    Example:
        >>> tuner = PolicyGradientTuner(seed=0)
        >>> tuner.update_search_space({"fc": {"_type": "choice", "_value": ["fa", "usf"]}})
        >>> tuner.generate_parameters(0)["fc"] in ("fa", "usf")
        True
    """

    def __init__(self, optimize_mode: str = "maximize", learning_rate: float = 0.3, baseline_decay: float = 0.8,
                 normalize_advantage: bool = True, entropy_weight: float = 0.0, failure_metric: float | str = "worst",
                 dedup: bool = True, dedup_retries: int = 50, seed: int | None = None,
                 state_file: str | os.PathLike | None = None):
        super().__init__()
        if optimize_mode not in ("maximize", "minimize"):
            raise ValueError(f"optimize_mode must be 'maximize' or 'minimize', not {optimize_mode!r}")
        if not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must be in [0, 1), not {baseline_decay}")
        if isinstance(failure_metric, str) and failure_metric not in ("worst", "ignore"):
            raise ValueError(f"failure_metric must be 'worst', 'ignore' or a number, not {failure_metric!r}")
        self.optimize_mode = optimize_mode
        self.learning_rate = float(learning_rate)
        self.baseline_decay = float(baseline_decay)
        self.normalize_advantage = bool(normalize_advantage)
        self.entropy_weight = float(entropy_weight)
        self.failure_metric = failure_metric
        self.dedup = bool(dedup)
        self.dedup_retries = int(dedup_retries)
        self.seed = seed
        self._state_file = Path(state_file) if state_file is not None else None

        self.rng = np.random.default_rng(seed)
        self.search_space: dict[str, dict] = {}
        self.candidates: dict[str, list] = {}
        self.logits: dict[str, np.ndarray] = {}
        self.baseline: float | None = None
        self.variance = 0.0
        self.step = 0
        self.history: list[tuple[dict[str, Any], float]] = []  # (parameters, reward) of every applied update
        self.sampled: set[str] = set()  # architectures handed out (for dedup)
        self.pending: dict[int, dict[str, Any]] = {}  # parameter id -> parameters, until the trial ends
        self._loaded: dict[str, Any] | None = None
        self._loaded_from: Path | None = None
        self._waiting_imports: list[dict[str, Any]] = []
        self.load_checkpoint()

    # -- persistence -------------------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path | None:
        if self._state_file is not None:
            return self._state_file
        checkpoint_dir = self.get_checkpoint_path()  # NNI_CHECKPOINT_DIRECTORY, set by the NNI manager
        return Path(checkpoint_dir) / STATE_FILE_NAME if checkpoint_dir else None

    def state_dict(self) -> dict[str, Any]:
        return {"version": _STATE_VERSION, "tuner": type(self).__name__, "optimize_mode": self.optimize_mode,
                "search_space": self.search_space, "logits": {k: v.tolist() for k, v in self.logits.items()},
                "baseline": self.baseline, "variance": self.variance, "step": self.step,
                "rng": self.rng.bit_generator.state,
                "history": [{"parameters": p, "reward": r} for p, r in self.history], "sampled": sorted(self.sampled)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a saved state. Applied now if the search space is known, else at :meth:`update_search_space`."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"policy state has version {state.get('version')!r}; this tuner reads {_STATE_VERSION}")
        self._loaded = state
        if self.search_space:
            self._restore()

    def save_checkpoint(self) -> None:
        path = self.state_path
        if path is None or not self.search_space:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.state_dict()))
        os.replace(tmp, path)  # atomic: a crash never leaves half a file

    def load_checkpoint(self) -> None:
        """Called by NNI's dispatcher on ``nnictl resume`` (and by ``__init__``): load the state file if any."""
        path = self.state_path
        if path is None or not path.is_file() or (self._loaded is not None and self._loaded_from == path):
            return  # nothing saved, or already read by __init__ and not yet applied
        _logger.info("loading policy state from %s", path)
        self._loaded_from = path
        self.load_state_dict(json.loads(path.read_text()))

    def _restore(self) -> None:
        state, self._loaded = self._loaded, None
        if state is None:
            return
        kept = [label for label, values in state.get("logits", {}).items()
                if label in self.candidates and len(values) == len(self.candidates[label])
                and state["search_space"].get(label, {}).get("_value") == self.candidates[label]]
        for label in kept:
            self.logits[label] = np.asarray(state["logits"][label], dtype=float)
        if set(kept) != set(self.candidates) or state["search_space"] != self.search_space:
            _logger.warning("saved policy is for another search space: kept the logits of %s, reset the rest", kept)
        if not kept:
            return
        self.baseline, self.variance, self.step = state["baseline"], float(state["variance"]), int(state["step"])
        self.rng.bit_generator.state = state["rng"]
        self.history = [(h["parameters"], float(h["reward"])) for h in state.get("history", [])]
        self.sampled |= set(state.get("sampled", []))
        _logger.info("restored policy at step %d (baseline %s)", self.step, self.baseline)

    # -- NNI tuner interface -----------------------------------------------------------------------------------

    def update_search_space(self, search_space: dict[str, dict]) -> None:
        candidates = {}
        for label, spec in sorted(search_space.items()):
            kind, values = spec.get("_type"), spec.get("_value")
            if kind not in _SUPPORTED_TYPES:
                raise ValueError(f"PolicyGradientTuner supports {' and '.join(_SUPPORTED_TYPES)} parameters; "
                                 f"{label!r} is {kind!r}. Export the space with `nni-bio export-space`, or use TPE.")
            if not values or any(isinstance(v, dict) for v in values):
                raise ValueError(f"{label!r}: choices must be a non-empty list of plain values (no nested spaces)")
            candidates[label] = list(values)
        old = self.logits
        self.search_space = {label: search_space[label] for label in candidates}
        self.candidates = candidates
        self.logits = {label: old[label] if label in old and len(old[label]) == len(values) else np.zeros(len(values))
                       for label, values in candidates.items()}
        self._restore()
        if self._waiting_imports:
            waiting, self._waiting_imports = self._waiting_imports, []
            self.import_data(waiting)

    def probabilities(self) -> dict[str, dict[Any, float]]:
        """The current policy: ``{label: {candidate: probability}}``."""
        return {label: dict(zip(self.candidates[label], _softmax(self.logits[label]).tolist()))
                for label in self.candidates}

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        if not self.candidates:
            raise NoMoreTrialError("the search space is empty")
        for _ in range(self.dedup_retries if self.dedup else 1):
            parameters = {label: values[self.rng.choice(len(values), p=_softmax(self.logits[label]))]
                          for label, values in self.candidates.items()}
            if _key(parameters) not in self.sampled:
                break
        self.sampled.add(_key(parameters))
        self.pending[parameter_id] = parameters
        self.save_checkpoint()
        return parameters

    def receive_trial_result(self, parameter_id: int, parameters: dict[str, Any], value: Any, **kwargs: Any) -> None:
        self.pending.pop(parameter_id, None)
        self._learn(parameters, self._reward(value))

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        parameters = self.pending.pop(parameter_id, None)
        if success or parameters is None:  # a successful trial's reward came with its final result
            return
        if self.failure_metric == "ignore":
            return
        if self.failure_metric == "worst":
            if not self.history:
                _logger.info("trial %s failed before any result; nothing to learn from it yet", parameter_id)
                return
            reward = min(r for _, r in self.history)
        else:
            reward = self._reward(float(self.failure_metric))
        _logger.info("trial %s failed: updating with reward %.4f", parameter_id, reward)
        self._learn(parameters, reward)

    def import_data(self, data: list[dict[str, Any]]) -> None:
        """Learn from earlier trials (``nnictl resume``, ``nnictl experiment import``) not yet in the saved state."""
        if not self.candidates:
            self._waiting_imports.extend(data)
            return
        known = Counter((_key(p), r) for p, r in self.history)
        replayed = 0
        for entry in data:
            parameters = {k: _unwrap(v) for k, v in entry["parameter"].items()}
            try:
                reward = self._reward(entry["value"])
            except (RuntimeError, TypeError, ValueError) as exc:
                _logger.warning("skipping imported trial %s: %s", parameters, exc)
                continue
            self.sampled.add(_key(parameters))
            if known[(_key(parameters), reward)] > 0:
                known[(_key(parameters), reward)] -= 1
                continue
            if self._learn(parameters, reward):
                replayed += 1
        _logger.info("imported %d trials, replayed %d rewards", len(data), replayed)

    # -- REINFORCE ---------------------------------------------------------------------------------------------

    def _reward(self, value: Any) -> float:
        metric = float(extract_scalar_reward(value))
        return metric if self.optimize_mode == "maximize" else -metric

    def _indices(self, parameters: dict[str, Any]) -> dict[str, int] | None:
        try:
            return {label: self.candidates[label].index(_unwrap(parameters[label])) for label in self.candidates}
        except (KeyError, ValueError):
            _logger.warning("parameters %s are not in the search space; ignored", parameters)
            return None

    def _learn(self, parameters: dict[str, Any], reward: float) -> bool:
        """One REINFORCE step on ``parameters`` with ``reward``; False if they are not in the space."""
        indices = self._indices(parameters)
        if indices is None or not np.isfinite(reward):
            return False
        if self.baseline is None:
            self.baseline = reward
        deviation = reward - self.baseline
        self.variance = self.baseline_decay * self.variance + (1 - self.baseline_decay) * deviation ** 2
        advantage = deviation
        if self.normalize_advantage:
            std = float(np.sqrt(self.variance))
            advantage = deviation / std if std > 1e-12 else 0.0
        for label, index in indices.items():
            p = _softmax(self.logits[label])
            grad = -p
            grad[index] += 1.0
            step = advantage * grad
            if self.entropy_weight:
                entropy = -float(np.sum(p * np.log(p + 1e-12)))
                step = step - self.entropy_weight * p * (np.log(p + 1e-12) + entropy)
            self.logits[label] = self.logits[label] + self.learning_rate * step
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * reward
        self.step += 1
        self.history.append(({k: _unwrap(v) for k, v in parameters.items()}, reward))
        _logger.info("step %d: reward %.4f, advantage %+.3f, baseline %.4f; most likely now: %s", self.step, reward,
                     advantage, self.baseline, {k: self.candidates[k][int(np.argmax(v))] for k, v in self.logits.items()})
        self.save_checkpoint()
        return True
