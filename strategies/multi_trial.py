"""Multi-trial search from Python: NNI's ``NasExperiment`` with one of its multi-trial strategies.

Every strategy of ``nni.nas.strategy`` that trains architectures one by one, plus nni-bio's policy-gradient
tuner, on any nni-bio search space::

    from nni_bio.strategies.multi_trial import run_multi_trial
    result = run_multi_trial("tiny", "evolution", dataset="digits", max_trials=6, epochs=2)
    print(result.best.metric, result.genotype)

``engine="sequential"`` trains in this process (no NNI manager, no web UI: tests, notebooks, quick runs);
``engine="ts"`` runs each trial as a process under the NNI manager, with the web UI on ``port`` while the search
runs. For the YAML route (``nnictl create``) see ``examples/README.md``.

The evaluator is :class:`SampleEvaluator` calling :func:`evaluate`, which trains and reports through the same
trial runtime as ``python -m nni_bio.trial`` (:mod:`nni_bio.train.trial_runtime`): the network is built from the
genotype, and every trial writes ``genotype.json``, ``result.json`` and TensorBoard logs (``ts``: in NNI's trial
folder; ``sequential``: under ``WORKING_DIR/EXPERIMENT_ID/trials/N``). NNI serializes the evaluator into every
trial, so it carries only plain arguments and builds the data set inside the trial (a data set in the payload
fails with "payload too large").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nni_bio.nas.mutables  # noqa: F401  (applies nni_bio.nas._compat before nni.nas: gym alias, GridSearch fix)

from nni.nas.evaluator import FunctionalEvaluator  # noqa: E402

__all__ = ["STRATEGIES", "SampleEvaluator", "SearchResult", "TrialRecord", "evaluate", "free_port", "make_strategy",
           "run_multi_trial"]

_logger = logging.getLogger(__name__)

#: strategy name -> what it is (the names ``run_multi_trial`` accepts)
STRATEGIES = {
    "evolution": "nni.nas.strategy.RegularizedEvolution (Real et al. 2019)",
    "random": "nni.nas.strategy.Random",
    "tpe": "NNI's TPE tuner (tree-structured Parzen estimator), as nni.nas.strategy.TPE runs it",
    "ppo": "nni.nas.strategy.PolicyBasedRL (reinforcement learning: PPO with an LSTM controller, tianshou)",
    "grid": "nni.nas.strategy.GridSearch",
    "policy_gradient": "nni_bio.strategies.policy_gradient.PolicyGradientTuner (the RL tuner of digits-policy-gradient.yml) as a NAS strategy",
}


@dataclass
class TrialRecord:
    """One trained (or failed) architecture."""

    index: int
    sample: dict[str, Any]
    status: str  # NNI's ModelStatus value: "trained", "failed", ...
    metric: float | None  # final validation accuracy
    intermediates: list[float] = field(default_factory=list)


@dataclass
class SearchResult:
    """What :func:`run_multi_trial` returns: every trial, the best one, and the best genotype."""

    trials: list[TrialRecord]
    best: TrialRecord | None
    genotype: dict[str, Any] | None  # space_cls.export_genotype(best.sample, space_args)
    space_args: dict[str, Any]
    experiment_id: str


def evaluate(sample: dict[str, Any], *, space: str, space_args: dict[str, Any] | None = None,
             dataset: str = "digits", epochs: int = 2, batch_size: int = 64, lr: float = 0.05,
             optimizer: str = "sgd", weight_decay: float = 3e-4, grad_clip: float = 5.0, train_limit: int = 0,
             data_dir: str | None = None, seed: int = 0, device: str | None = None,
             output_root: str | None = None) -> float:
    """Train the architecture ``sample`` as every multi-trial trial does
    (:func:`nni_bio.train.trial_runtime.train_architecture`: per-epoch and final NNI results, TensorBoard,
    ``genotype.json`` and ``result.json``); return the final validation accuracy.

    Runs inside the trial, so the data set is loaded here, never shipped with the evaluator. Files go
    to ``$NNI_OUTPUT_DIR`` (the ``ts`` engine's trial folder), else to a new numbered folder under
    ``output_root``.
    """
    import os

    import torch

    from nni_bio.train.training import TrainConfig
    from nni_bio.train.trial_runtime import train_architecture

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    config = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                         grad_clip=grad_clip, seed=seed, device=device)
    output = os.environ.get("NNI_OUTPUT_DIR") or _numbered_folder(Path(output_root or "runs/multi_trial"))
    final = train_architecture(space, space_args or {}, sample,
                               dataset=dataset, config=config, data_dir=data_dir, train_limit=train_limit,
                               output=output, say=_logger.info)
    return final["default"]


def _numbered_folder(root: Path) -> Path:
    """``root/N`` for the first N not taken (a sequential search's trials run one after another)."""
    root.mkdir(parents=True, exist_ok=True)
    index = 0
    while True:
        try:
            (root / str(index)).mkdir()
            return root / str(index)
        except FileExistsError:
            index += 1


class SampleEvaluator(FunctionalEvaluator):
    """NNI's ``FunctionalEvaluator``, handed the architecture's sample instead of a frozen model (the
    hook NNI leaves for this): every trial builds its network from the genotype, as ``python -m
    nni_bio.trial`` and ``nni-bio train`` do."""

    def _execute(self, model: Any) -> Any:
        return self.function(dict(model.sample or {}), **self.arguments)


def make_strategy(name: str, *, max_trials: int, seed: int = 0, **options: Any):
    """The NNI strategy called ``name`` (see :data:`STRATEGIES`); ``options`` go to its constructor."""
    from nni.nas import strategy

    if name == "evolution":
        population = max(2, min(20, max_trials // 2))
        kwargs = {"population_size": population, "sample_size": max(1, population // 2), "seed": seed}
        return strategy.RegularizedEvolution(**{**kwargs, **options})
    if name == "random":
        return strategy.Random(**{"seed": seed, **options})
    if name == "tpe":
        from nni.algorithms.hpo.tpe_tuner import TpeTuner

        from nni_bio.strategies.tuner_strategy import TunerStrategy

        return TunerStrategy(TpeTuner(**{"optimize_mode": "maximize", "seed": seed, **options}))
    if name == "ppo":
        return strategy.PolicyBasedRL(**{"samples_per_update": max(1, min(20, max_trials // 3)), **options})
    if name == "grid":
        return strategy.GridSearch(**{"seed": seed, **options})
    if name == "policy_gradient":
        from nni_bio.strategies.policy_gradient import PolicyGradientTuner
        from nni_bio.strategies.tuner_strategy import TunerStrategy

        return TunerStrategy(PolicyGradientTuner(**{"seed": seed, **options}))
    import difflib

    from nni_bio.core.errors import NniBioError

    close = difflib.get_close_matches(name, STRATEGIES, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise NniBioError(f"unknown multi-trial strategy {name!r}.{hint} Available: {', '.join(STRATEGIES)}")


def free_port(start: int = 8080) -> int:
    """The first port from ``start`` nothing listens on (for the experiment's web UI)."""
    import socket

    from nni_bio.core.errors import NniBioError

    for port in range(start, start + 200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise NniBioError(f"no free port in {start}..{start + 199}")


def run_multi_trial(space: str = "tiny", strategy: str = "evolution", *, dataset: str = "digits",
                    max_trials: int = 8, epochs: int = 2, space_args: dict[str, Any] | None = None,
                    engine: str = "sequential", seed: int = 0, strategy_args: dict[str, Any] | None = None,
                    train_args: dict[str, Any] | None = None, data_dir: str | None = None,
                    port: int | None = None, working_dir: str | Path | None = None,
                    trial_concurrency: int = 1, trial_gpu_number: int = 0) -> SearchResult:
    """Search ``space`` with a multi-trial ``strategy``; return every trial and the best genotype.

    Args:
        space: search space name (``tiny``, ``rule_per_layer``, ``darts``, ``nb201``).
        strategy: ``evolution``, ``random``, ``tpe``, ``ppo`` (NNI's PolicyBasedRL), ``grid`` or ``policy_gradient`` (nni-bio's REINFORCE tuner).
        dataset: data set the trials train on (it also sets the space's input shape and classes).
        max_trials: architectures to train.
        epochs: training epochs per architecture.
        space_args: extra space constructor arguments (plain data), e.g. ``{"width": 8, "rules": ["fa", "usf"]}``.
        engine: ``sequential`` (in this process) or ``ts`` (NNI manager, one process per trial, web UI).
        seed: seeds the strategy, the model initialisation and the data split.
        strategy_args: overrides of the strategy's constructor arguments.
        train_args: more :func:`evaluate` arguments (``batch_size``, ``lr``, ``train_limit``, ``device``...).
        data_dir: where user data sets live (default ``$NNI_BIO_DATA``); unused for digits.
        port: web UI port of the ``ts`` engine (default: first free from 8080).
        working_dir: NNI's experiment directory (default ``~/nni-experiments``); each trial's files go to
            ``WORKING_DIR/EXPERIMENT_ID/trials/N`` (``sequential``) or NNI's trial folder (``ts``).
        trial_concurrency, trial_gpu_number: ``ts`` engine only.

    Example:
        >>> result = run_multi_trial("tiny", "random", max_trials=2, epochs=1, space_args={"width": 4})
        >>> sorted(result.best.sample)
        ['conv1', 'conv2', 'fc']
    """
    import numpy as np
    import torch
    from nni.nas.experiment import NasExperiment, NasExperimentConfig

    from nni.experiment import management

    from nni_bio.search_spaces import space_arguments, space_class

    if engine not in ("sequential", "ts"):
        raise ValueError(f"engine must be 'sequential' or 'ts', not {engine!r}")
    space_cls = space_class(space)
    args = space_arguments(space_cls, dict(space_args or {}), dataset)
    torch.manual_seed(seed)
    np.random.seed(seed)
    model_space = space_cls(**args)
    experiment_id = management.generate_experiment_id()
    root = Path(working_dir or Path.home() / "nni-experiments") / experiment_id / "trials"
    evaluator = SampleEvaluator(evaluate, **{"space": space, "space_args": args, "dataset": dataset, "epochs": epochs,
                                             "data_dir": data_dir, "seed": seed, "output_root": str(root),
                                             **(train_args or {})})
    search = make_strategy(strategy, max_trials=max_trials, seed=seed, **(strategy_args or {}))

    config = NasExperimentConfig(engine, "simplified", "local" if engine == "ts" else None)
    config.max_trial_number = max_trials
    if engine == "sequential":
        config.execution_engine.continue_on_failure = True  # a diverging architecture fails, the search goes on
    else:
        config.trial_concurrency = trial_concurrency
        config.trial_gpu_number = trial_gpu_number
        config.training_service.use_active_gpu = trial_gpu_number > 0
    if working_dir is not None:
        config.experiment_working_directory = str(working_dir)
    experiment = NasExperiment(model_space, evaluator, search, config, id=experiment_id)
    try:
        if engine == "ts":
            experiment.run(port=port or free_port())
        else:
            experiment.run()
        trials = [TrialRecord(index, dict(model.sample or {}), model.status.value,
                              None if model.metric is None else float(model.metric),
                              [_scalar(m) for m in model.metrics.intermediates])
                  for index, model in enumerate(search.list_models(sort=False))]  # before stop: ts forgets them
    finally:
        experiment.stop()  # run() leaves it to atexit
    scored = [t for t in trials if t.metric is not None]
    best = max(scored, key=lambda t: t.metric) if scored else None
    genotype = space_cls.export_genotype(best.sample, args) if best else None
    return SearchResult(trials, best, genotype, args, experiment.id)


def _scalar(metric: Any) -> float:
    return float(metric["default"] if isinstance(metric, dict) else metric)
