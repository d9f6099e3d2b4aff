"""The stages of a study, each a thin call of an existing nni-bio entry point in a child process.

- **search** an arm: an ``nnictl`` experiment of ``python -m nni_bio.trial`` (multi-trial, visible in
  the NNI web UI) or ``python -m nni_bio.strategies.oneshot.trial`` (one-shot); writes ``search/<arm>/search.json``
  with the best architecture's genotype, every trial and the search cost;
- **retrain** one seed: ``nni-bio train --genotype ...`` into ``retrain/<arm>/s<seed>/`` (resumed
  with ``--resume`` when an interrupted checkpoint is there);
- **attack** one seed: ``nni-bio attack`` into ``attack/<arm>/s<seed>/``.

A stage is finished when its output file exists; a failed stage leaves ``failed.json`` with the
reason. Children die with the study (``PR_SET_PDEATHSIG``); an nnictl experiment outlives a killed
study, so its id is recorded and the next run follows it again instead of starting over.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nni_bio.core.errors import NniBioError
from nni_bio.core.safe_json import write_json
from nni_bio.nas.candidates import unwrap_choice

if TYPE_CHECKING:
    from nni_bio.study.config import StudyConfig

SEARCH, RETRAIN, ATTACK, LANDSCAPE, PROXY = "search", "retrain", "attack", "landscape", "proxy"
FAILED = "failed.json"
_space_lock = threading.Lock()  # NNI builds a space inside one global (per-process) mutable context


class StageFailed(NniBioError):
    """A stage's child process failed; the message is its reason."""


@dataclass
class Slot:
    """Where a stage runs: CPU threads for its process and, on a GPU machine, one GPU."""

    threads: int = 1
    gpu: int | None = None

    def env(self) -> dict[str, str]:
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "PYTHONWARNINGS": "ignore"}
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpu)
        return env

    @property
    def device(self) -> str:
        return "cuda" if self.gpu is not None else "cpu"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run_child(command: list[str], log: Path, slot: Slot) -> None:
    """Run ``command``, its output appended to ``log``; raise :class:`StageFailed` with the last lines."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"\n$ {shlex.join(command)}\n")
        out.flush()
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, env=slot.env(),
                               preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    if code != 0:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "error" in line.lower() or "FAILED" in line),
                      lines[-1] if lines else "no output")
        raise StageFailed(f"exit status {code}: {reason.strip()[:400]} (log: {log})")


def cli_flags(options: dict[str, Any]) -> list[str]:
    """``{"batch_size": 64, "no_augment": True}`` -> ``["--batch-size", "64", "--no-augment"]``."""
    flags: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not False and value is not None:
            flags += [flag, json.dumps(value) if isinstance(value, (dict, list)) else str(value)]
    return flags


def mark_failed(folder: Path, reason: str) -> None:
    """Record a stage's failure (``failed.json``); on a full or read-only disk the failure stays in memory only."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / FAILED, {"status": "failed", "reason": reason, "time": time.time()})
    except OSError:
        pass  # the run reports it all the same; the next run retries the stage, as for any unfinished one


def failure(folder: Path) -> str | None:
    path = folder / FAILED
    return json.loads(path.read_text())["reason"] if path.is_file() else None


# ------------------------------------------------------------------------------------------ search

def space_file(config: StudyConfig, arm: str, fmt: str = "choice") -> dict[str, Any]:
    """The arm's search space as NNI tuners read it (``choice`` or ``nas`` format)."""
    from nni_bio.search_spaces import space_json

    with _space_lock:
        return space_json(config.space, config.dataset, config.arm_space_args(arm), fmt)


def space_size(config: StudyConfig, arm: str) -> tuple[dict[str, Any], int]:
    """The arm's search space (NNI's choice format) and its number of architectures."""
    space = space_file(config, arm)
    return space, math.prod(len(v["_value"]) for v in space.values())


def _tuner(config: StudyConfig, repeat: int = 0, always: list[dict[str, Any]] | None = None
           ) -> tuple[dict[str, Any], str]:
    """The ``tuner`` section and the search-space format for the study's multi-trial strategy; every tuner is
    seeded with the study's ``seed`` plus the repeat's index (``search.tuner_args`` may override it)."""
    s = config.search
    seeded = {"seed": config.seed + repeat, **s.tuner_args}
    if s.strategy == "halving":
        rungs, eta = halving_rungs(config)
        population = s.tuner_args.get("population") or halving_population(config, len(always or []))
        return {"className": "nni_bio.strategies.halving.SuccessiveHalvingTuner", "codeDirectory": ".",
                "classArgs": {"optimize_mode": "maximize", **seeded, "rungs": rungs, "eta": eta,
                              "population": population, "always": always or []}}, "choice"
    if s.strategy == "evolution":
        population = max(2, min(20, s.max_trials // 2))
        args = {"optimize_mode": "maximize", "population_size": population, "sample_size": max(1, population // 2)}
        return {"className": "nni_bio.strategies.evolution.EvolutionTuner", "codeDirectory": ".",  # resumable
                "classArgs": {**args, **seeded}}, "nas"
    if s.strategy == "random":
        return {"name": "Random", "classArgs": seeded}, "choice"
    if s.strategy == "tpe":
        return {"name": "TPE", "classArgs": {"optimize_mode": "maximize", **seeded}}, "choice"
    return {"className": "nni_bio.strategies.policy_gradient.PolicyGradientTuner", "codeDirectory": ".",
            "classArgs": {"optimize_mode": "maximize", **seeded}}, "choice"


def halving_rungs(config: StudyConfig) -> tuple[list[int], float]:
    """Successive halving's rungs (epochs) and ``eta``: ``search.tuner_args.rungs``, or three rungs ending at
    ``search.epochs``, each ``eta`` (default 3) times shorter than the next."""
    eta = float(config.search.tuner_args.get("eta", 3))
    rungs = config.search.tuner_args.get("rungs") or sorted(
        {max(1, round(config.search.epochs / eta ** i)) for i in range(3)})
    return [int(r) for r in rungs], eta


def halving_population(config: StudyConfig, always: int) -> int:
    """The most random networks in rung 0 whose whole schedule (with ``always`` corners at every rung) fits in
    ``search.max_trials`` (at least 1)."""
    from nni_bio.strategies.halving import rung_schedule

    rungs, eta = halving_rungs(config)
    population = 1
    while sum(rung_schedule(population + 1, len(rungs), eta, always)) <= config.search.max_trials:
        population += 1
    return population


def halving_trials(config: StudyConfig, arm: str, always: int) -> int:
    """Trials of the arm's halving schedule (rung 0 holds at most the space's networks but its corners)."""
    from nni_bio.strategies.halving import rung_schedule

    rungs, eta = halving_rungs(config)
    population = config.search.tuner_args.get("population") or halving_population(config, always)
    population = max(0, min(population, space_size(config, arm)[1] - always))
    return sum(rung_schedule(population, len(rungs), eta, always))


_repeats_cache: dict[tuple[str, str], int] = {}


def repeats(config: StudyConfig, arm: str) -> int:
    """How many independent searches the arm gets: ``search.repeats``, or 1 when its space has one architecture
    (there is nothing to search, so every repeat would find the same network)."""
    if config.search.repeats == 1:
        return 1
    key = (config.fingerprint(), arm)
    if key not in _repeats_cache:
        _repeats_cache[key] = config.search.repeats if space_size(config, arm)[1] > 1 else 1
    return _repeats_cache[key]


def run_name(arm: str, repeat: int = 0) -> str:
    """The folder name of one search of an arm and what comes from it: ``mixed``, ``mixed/repeat1``, ..."""
    return arm if repeat == 0 else f"{arm}/repeat{repeat}"


def search_dir(study_dir: Path, arm: str, repeat: int = 0) -> Path:
    return study_dir / SEARCH / run_name(arm, repeat)


def trial_seed(folder: Path) -> int:
    """The seed a multi-trial search's trials ran with, read from its ``experiment.yml`` (what NNI ran)."""
    import re

    import yaml

    command = yaml.safe_load((folder / "experiment.yml").read_text())["trialCommand"]
    found = re.search(r"--seed (\d+)", command)
    return int(found.group(1)) if found else 0


def shared_augmentation(config: StudyConfig) -> dict[str, Any]:
    """The retraining's augmentation (``no_augment``, ``cutout``), which multi-trial search trials use too, so the
    search scores networks on the images the final recipe trains on."""
    return {key: config.retrain.args[key] for key in ("no_augment", "cutout") if key in config.retrain.args}


def trial_command(config: StudyConfig, arm: str, slot: Slot, folder: Path, repeat: int = 0) -> tuple[str, list[str]]:
    """The module (``python -m``) and arguments of the arm's search: NNI's trial (multi-trial) or the one-shot run."""
    common = ["--space", config.space, "--space-args", json.dumps(config.arm_space_args(arm), sort_keys=True),
              "--dataset", config.dataset, "--epochs", str(config.search.epochs), "--device", slot.device]
    if config.data_dir:
        common += ["--data-dir", config.data_dir]
    if not config.search.one_shot:  # repeat k's trials draw weights and split with seed + k: the search's own noise
        train = {**config.search.train}
        if repeat:
            train["seed"] = int(train.get("seed", 0)) + repeat
        return "nni_bio.trial", [*common, *cli_flags({**shared_augmentation(config), **train})]
    hparams = {**config.search.train, **config.search.hparams}
    return "nni_bio.strategies.oneshot.trial", [
        "--strategy", config.search.strategy, *common, "--threads", str(slot.threads), "--hparams", json.dumps(hparams),
        "--output", str(folder / "oneshot"), "--seed", str(config.seed + repeat), "--resume"]


def experiment_yaml(config: StudyConfig, arm: str, folder: Path, slot: Slot, max_trials: int | None = None,
                    repeat: int = 0, always: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The NNI experiment that searches one arm (written to ``search/<arm>/experiment.yml``)."""
    tuner, fmt = _tuner(config, repeat, always)
    (folder / "search_space.json").write_text(json.dumps(space_file(config, arm, fmt), indent=2) + "\n")
    module, arguments = trial_command(config, arm, slot, folder, repeat)
    trial = [sys.executable, "-m", module, *arguments]
    return {
        "experimentName": f"nni-bio study {config.name}: arm {arm} ({', '.join(config.arms[arm])})"
                          + (f", repeat {repeat}" if repeat else ""),
        "searchSpaceFile": "search_space.json",
        "trialCommand": f"OMP_NUM_THREADS={slot.threads} {shlex.join(trial)}",
        "trialCodeDirectory": ".",
        "trialConcurrency": config.search.concurrency,
        "maxTrialNumber": max_trials or config.search.max_trials,
        "maxExperimentDuration": config.search.max_duration,
        "experimentWorkingDirectory": str((folder / "nni").resolve()),
        "tuner": tuner,
        "trainingService": {"platform": "local", "useActiveGpu": slot.gpu is not None,
                            **({"gpuIndices": [slot.gpu]} if slot.gpu is not None else {})},
        **({"trialGpuNumber": 1} if slot.gpu is not None else {}),
    }


def _follow_or_create(folder: Path, log: Path, listen: str | None = None) -> tuple[Any, str, int]:
    """Follow the experiment an interrupted run started, if its manager still answers; else create one."""
    import yaml

    from nni_bio.launch import experiment as ex

    record = folder / "experiment.json"
    if record.is_file():
        old = json.loads(record.read_text())
        try:
            client = ex.RestClient(old["port"])
            if client.experiment_id() == old["id"]:
                return client, old["id"], old["port"]
        except OSError:
            pass
        ex.stop(old["id"])  # not answering: make sure it is gone, then start again
    adopted = _adopt_orphan(folder)
    if adopted is not None:
        return adopted
    path = folder / "experiment.yml"
    try:
        done, port, exp_id = ex.create_on_free_port(path, yaml.safe_load(path.read_text()), listen=listen)
    except ex.ExperimentError as exc:
        with log.open("a") as out:
            out.write(getattr(exc, "output", str(exc)))
        raise StageFailed(f"{exc} (nnictl's output: {log})") from exc
    with log.open("a") as out:
        out.write(done.stdout)
    client = ex.RestClient(port)
    write_json(record, {"id": exp_id, "port": port, "started": time.time()})
    return client, exp_id, port


def _adopt_orphan(folder: Path) -> tuple[Any, str, int] | None:
    """An experiment of this arm that a killed run was starting (no ``experiment.json`` yet): follow it if its
    manager answers, else stop it, so no NNI manager is left behind and no search runs twice."""
    from nni_bio.launch import experiment as ex

    with ex.port_lock():  # held by a killed run's nnictl until it has registered its experiment
        found = ex.experiments_in(folder / "nni")
    for exp_id, record in sorted(found.items(), key=lambda item: -float(item[1].get("startTime") or 0)):
        try:
            client = ex.RestClient(record["port"])
            if client.experiment_id() == exp_id:
                write_json(folder / "experiment.json", {"id": exp_id, "port": record["port"], "started": time.time(),
                                                        "adopted": True})
                for other in found:  # at most one is followed; any other is stopped
                    if other != exp_id:
                        ex.stop(other)
                return client, exp_id, record["port"]
        except (OSError, KeyError, TypeError):
            pass
        ex.stop(exp_id)
    return None


def run_search(config: StudyConfig, arm: str, study_dir: Path, slot: Slot, say=print, repeat: int = 0
               ) -> dict[str, Any]:
    """Search one arm (its ``repeat``-th independent search) and write ``search/<arm>[/repeat<k>]/search.json``
    (and ``genotype.json``)."""
    from nni_bio.search_spaces import space_class
    from nni_bio.search_spaces import space_arguments

    folder = search_dir(study_dir, arm, repeat)
    folder.mkdir(parents=True, exist_ok=True)
    space_cls = space_class(config.space)
    space_args = space_arguments(space_cls, config.arm_space_args(arm), config.dataset)
    started = time.time()
    space, size = space_size(config, arm)
    if size == 1:
        sample = {label: v["_value"][0] for label, v in space.items()}
        return _finish_search(folder, space_cls.export_genotype(sample, space_args), {
            "status": "complete", "strategy": "none", "note": "the space has one architecture for this rule set: "
            "nothing to search", "architectures": 1, "trials": [], "seconds": 0.0, "trial_epochs": 0})
    if config.search.one_shot:
        return _search_one_shot(config, arm, folder, space_cls, space_args, slot, started, repeat)
    return _search_multi_trial(config, arm, folder, space_cls, space_args, size, slot, started, say, repeat,
                               study_dir)


def _search_multi_trial(config, arm, folder, space_cls, space_args, size, slot, started, say, repeat,
                        study_dir) -> dict[str, Any]:
    import yaml

    from nni_bio.launch import experiment as ex
    from nni_bio.strategies.halving import BUDGET_KEY

    log = folder / "search.log"
    halving = config.search.strategy == "halving"
    if halving:  # the corners are networks of the tuner's schedule, trained at every rung
        corners = corner_samples(config, arm, study_dir, repeat)
        budget = halving_trials(config, arm, len(corners["evaluated"]))
        always = [json.loads(json.dumps(c["sample"])) for c in corners["evaluated"]]  # plain str, for the YAML
    else:  # the corners are trials of the budget, trained before the tuner starts
        corners = evaluate_corners(config, arm, study_dir, slot, repeat)
        budget = max(1, config.search.max_trials - len(corners["evaluated"]))
        always = None
    (folder / "experiment.yml").write_text(yaml.safe_dump(
        experiment_yaml(config, arm, folder, slot, budget, repeat, always), sort_keys=False))
    client, exp_id, port = _follow_or_create(folder, log, config.search.listen)
    say(f"search {arm}: NNI experiment {exp_id}, web UI {ex.web_ui_hint(port, config.search.listen)}")
    try:
        trials = ex.wait(client, budget, math.inf, progress=False)
    finally:
        ex.stop(exp_id)
    records = []
    for t in trials:
        sample = {k: unwrap_choice(v) for k, v in t.parameters.items()}
        epochs = int(sample.pop(BUDGET_KEY, config.search.epochs))
        records.append({"id": t.id, "status": t.status, "val_acc": t.score, "epochs": epochs, "sample": sample})
    top = max((r["epochs"] for r in records), default=config.search.epochs)
    if halving:  # each corner's score at the top rung, the search's own highest fidelity
        for corner in corners["evaluated"]:
            corner["val_acc"] = next((r["val_acc"] for r in records if r["sample"] == corner["sample"]
                                      and r["epochs"] == top and r["val_acc"] is not None), None)
            corner["in_search"] = True
    started = json.loads((folder / "experiment.json").read_text()).get("started", started)
    summary = {"strategy": config.search.strategy, "experiment_id": exp_id, "architectures": size,
               "trials": records, "corners": corners["evaluated"], "corners_unreachable": corners["unreachable"],
               "seconds": round(time.time() - started + corners["seconds"], 1), "top_epochs": top,
               "trial_epochs": sum(r["epochs"] for r in records) + config.search.epochs * (
                   0 if halving else len(corners["evaluated"])),
               "tuner_seed": config.seed + repeat, "trial_seed": trial_seed(folder), "repeat": repeat,
               "web_ui": f"nnictl view {exp_id} --experiment_dir {folder / 'nni'}"}
    if halving:
        summary["rungs"] = halving_rungs(config)[0]
    candidates = [(r["val_acc"], r["id"], r["sample"]) for r in records  # chosen at the top fidelity only
                  if r["status"] == "SUCCEEDED" and r["val_acc"] is not None and r["epochs"] == top]
    candidates += [(c["val_acc"], f"corner:{c['arm']}", c["sample"]) for c in corners["evaluated"]
                   if c.get("val_acc") is not None and not c.get("in_search")]
    if not candidates:
        reasons = f"all {len(trials)} trials failed" if trials else "no trial ran"
        mark_failed(folder, f"{reasons}; trial logs under {folder / 'nni' / exp_id / 'trials'}")
        write_json(folder / "search.json", {**summary, "status": "failed", "reason": reasons})
        raise StageFailed(f"arm {arm}: {reasons}")
    score, best_id, sample = max(candidates, key=lambda c: c[0])  # validation accuracy, ties: the first
    return _finish_search(folder, space_cls.export_genotype(sample, space_args),
                          {**summary, "status": "complete", "best_trial": best_id, "best_val_acc": score})


def corner_samples(config: StudyConfig, arm: str, study_dir: Path, repeat: int = 0) -> dict[str, Any]:
    """The arm's corners (:mod:`nni_bio.study.corners`) as samples of its space: ``evaluated`` (``arm``,
    ``sample``) and ``unreachable`` (arms whose network is not in this space). Repeat ``k`` of a search meets
    repeat ``k`` of each single-rule arm (its only search when it has one)."""
    from nni_bio.study.corners import corner_arms, in_space

    space = space_file(config, arm)
    evaluated, unreachable = [], []
    for other in corner_arms(config, arm):
        theirs = json.loads((search_dir(study_dir, other, min(repeat, repeats(config, other) - 1))
                             / "genotype.json").read_text())
        sample = in_space(theirs["sample"], space)
        if sample is None:
            unreachable.append(other)
        else:
            evaluated.append({"arm": other, "sample": sample})
    return {"evaluated": evaluated, "unreachable": unreachable, "seconds": 0.0}


def evaluate_corners(config: StudyConfig, arm: str, study_dir: Path, slot: Slot, repeat: int = 0) -> dict[str, Any]:
    """Train the arm's corners (:mod:`nni_bio.study.corners`) as trials of its own search: same trial command,
    fidelity and split, one ``python -m nni_bio.trial --sample`` each; finished ones are kept across runs."""
    corners = corner_samples(config, arm, study_dir, repeat)
    evaluated, seconds = [], 0.0
    module, arguments = trial_command(config, arm, slot, search_dir(study_dir, arm, repeat), repeat)
    for corner in corners["evaluated"]:
        other, sample = corner["arm"], corner["sample"]
        out = search_dir(study_dir, arm, repeat) / "corners" / other
        result = out / "result.json"
        if not result.is_file():
            started = time.time()
            run_child([sys.executable, "-m", module, *arguments, "--sample", json.dumps(sample, sort_keys=True),
                       "--output", str(out)], out.parent / f"{other}.log", slot)
            seconds += time.time() - started
        score = json.loads(result.read_text()).get("default")
        evaluated.append({"arm": other, "sample": sample, "val_acc": score})
    return {"evaluated": evaluated, "unreachable": corners["unreachable"], "seconds": seconds}


def _search_one_shot(config, arm, folder, space_cls, space_args, slot, started, repeat) -> dict[str, Any]:
    run_dir = folder / "oneshot"
    module, arguments = trial_command(config, arm, slot, folder, repeat)
    run_child([sys.executable, "-m", module, *arguments], folder / "search.log", slot)
    genotype = json.loads((run_dir / "genotype.json").read_text())
    result = json.loads((run_dir / "result.json").read_text())
    return _finish_search(folder, genotype, {
        "status": "complete", "strategy": config.search.strategy, "architectures": None, "trials": [],
        "seconds": round(time.time() - started, 1), "trial_epochs": config.search.epochs, "repeat": repeat,
        "seed": config.seed + repeat,
        "best_val_acc": result.get("derived_val_acc", result.get("default")),
        "supernet_val_acc": result.get("supernet_val_acc", result.get("default"))})


def _finish_search(folder: Path, genotype: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    write_json(folder / "genotype.json", genotype)
    summary = {**summary, "genotype": genotype}
    write_json(folder / "search.json", summary)
    return summary


def search_done(study_dir: Path, arm: str, repeat: int = 0) -> bool:
    path = search_dir(study_dir, arm, repeat) / "search.json"
    return path.is_file() and json.loads(path.read_text()).get("status") == "complete"


# ------------------------------------------------------------------------------- retrain and attack

def retrain_dir(study_dir: Path, arm: str, seed: int, repeat: int = 0) -> Path:
    return study_dir / RETRAIN / run_name(arm, repeat) / f"s{seed}"


def attack_dir(study_dir: Path, arm: str, seed: int) -> Path:
    return study_dir / ATTACK / arm / f"s{seed}"


def retrain_done(study_dir: Path, arm: str, seed: int, repeat: int = 0) -> bool:
    path = retrain_dir(study_dir, arm, seed, repeat) / "result.json"
    return path.is_file() and json.loads(path.read_text()).get("status") == "complete"


def run_retrain(config: StudyConfig, arm: str, seed: int, study_dir: Path, slot: Slot, repeat: int = 0) -> None:
    """``nni-bio train`` of the genotype of the arm's ``repeat``-th search with one seed (resumed if interrupted)."""
    out = retrain_dir(study_dir, arm, seed, repeat)
    run_child([sys.executable, "-m", "nni_bio.cli", *retrain_arguments(config, arm, seed, study_dir, slot, repeat)],
              out.parent / f"s{seed}.log", slot)


def retrain_arguments(config: StudyConfig, arm: str, seed: int, study_dir: Path, slot: Slot,
                      repeat: int = 0) -> list[str]:
    """The ``nni-bio`` arguments of one retraining."""
    return train_arguments(config, search_dir(study_dir, arm, repeat) / "genotype.json",
                           retrain_dir(study_dir, arm, seed, repeat), seed, slot)


def train_arguments(config: StudyConfig, genotype: Path, out: Path, seed: int, slot: Slot) -> list[str]:
    """The ``nni-bio`` arguments that train ``genotype`` with the study's final recipe into ``out``."""
    command = ["train", "--genotype", str(genotype),
               "--dataset", config.dataset, "--epochs", str(config.retrain.epochs), "--seed", str(seed),
               "--device", slot.device, "--output", str(out), "--no-progress", *cli_flags(config.retrain.args)]
    if config.data_dir:
        command += ["--data-dir", config.data_dir]
    if (out / "checkpoint.pt").is_file():
        command.append("--resume")
    return command


def attack_done(study_dir: Path, arm: str, seed: int) -> bool:
    return (attack_dir(study_dir, arm, seed) / "attack.json").is_file()


def run_attack(config: StudyConfig, arm: str, seed: int, study_dir: Path, slot: Slot) -> None:
    """``nni-bio attack`` of one retrained network (white-box through both gradient views, Square)."""
    out = attack_dir(study_dir, arm, seed)
    run_child([sys.executable, "-m", "nni_bio.cli", *attack_arguments(config, arm, seed, study_dir, slot)],
              out.parent / f"s{seed}.log", slot)


def attack_arguments(config: StudyConfig, arm: str, seed: int, study_dir: Path, slot: Slot) -> list[str]:
    """The ``nni-bio`` arguments of one attack run."""
    a = config.attack
    out = attack_dir(study_dir, arm, seed)
    return ["attack", str(retrain_dir(study_dir, arm, seed)),
               "--attacks", ",".join(a.attacks), "--gradient", ",".join(a.gradients), "--eps", a.eps,
               "--num-images", str(a.num_images), "--pgd-steps", str(a.pgd_steps),
               "--square-queries", str(a.square_queries), "--device", slot.device, "--output", str(out)]


# ------------------------------------------------------------------------------------------- landscape

def landscape_networks(config: StudyConfig, study_dir: Path) -> list[dict[str, Any]]:
    """The landscape's networks (``name``, ``sample`` or ``corner``, ``kind``, ``one_rule``); chosen once and kept
    in ``landscape/networks.json``, so every later run trains the same ones."""
    from nni_bio.study.corners import corner_arms
    from nni_bio.study.landscape import one_rule_networks, pick_networks, rules_of

    path = study_dir / LANDSCAPE / "networks.json"
    if path.is_file():
        return json.loads(path.read_text())
    arm = config.compare
    space = space_file(config, arm)
    networks = []
    for i, picked in enumerate(pick_networks(space, config.landscape.networks, config.landscape.seed)):
        rules = rules_of(picked["sample"], space)
        networks.append({"name": f"n{i:03d}", **picked, "one_rule": rules[0] if len(rules) == 1 else None})
    ones = one_rule_networks(space)
    for rule, sample in ones.items():
        if not any(n["sample"] == sample for n in networks):
            networks.append({"name": f"one-{rule}", "sample": sample, "kind": "one-rule", "one_rule": rule})
    if not ones:  # an op x rule space: its one-rule networks are the single-rule arms' found architectures
        for other in corner_arms(config, arm):
            networks.append({"name": f"corner-{other}", "corner": other, "kind": "corner",
                             "one_rule": config.arms[other][0]})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, networks)
    return networks


def landscape_dir(study_dir: Path, name: str) -> Path:
    return study_dir / LANDSCAPE / name


def landscape_done(study_dir: Path, name: str) -> bool:
    path = landscape_dir(study_dir, name) / "run" / "result.json"
    return path.is_file() and json.loads(path.read_text()).get("status") == "complete"


def run_landscape(config: StudyConfig, network: dict[str, Any], study_dir: Path, slot: Slot) -> None:
    """Train one landscape network with the final recipe and the first retraining seed (resumed if interrupted)."""
    from nni_bio.study.corners import in_space

    folder = landscape_dir(study_dir, network["name"])
    folder.mkdir(parents=True, exist_ok=True)
    sample = network.get("sample")
    if sample is None:  # a corner: the single-rule arm's network, in the compared arm's space
        theirs = json.loads((study_dir / SEARCH / network["corner"] / "genotype.json").read_text())["sample"]
        sample = in_space(theirs, space_file(config, config.compare))
        if sample is None:
            raise StageFailed(f"the {network['corner']} arm's network is not in the {config.compare} arm's space")
    train_sample(config, sample, folder, slot)


def train_sample(config: StudyConfig, sample: dict[str, Any], folder: Path, slot: Slot) -> None:
    """Train ``sample`` of the compared arm's space with the final recipe and the first retraining seed into
    ``folder/run`` (its genotype in ``folder/genotype.json``; resumed when a checkpoint is there)."""
    from nni_bio.search_spaces import space_arguments, space_class

    space_cls = space_class(config.space)
    args = space_arguments(space_cls, config.arm_space_args(config.compare), config.dataset)
    write_json(folder / "genotype.json", space_cls.export_genotype(sample, args))
    out = folder / "run"
    command = train_arguments(config, folder / "genotype.json", out, config.retrain.seeds[0], slot)
    if (out / "checkpoint.pt").is_file():
        command.append("--resume")
    run_child([sys.executable, "-m", "nni_bio.cli", *command], folder / "train.log", slot)


# ------------------------------------------------------------------------------------------- proxy check

def proxy_candidates(config: StudyConfig, study_dir: Path) -> list[dict[str, Any]]:
    """The compared arm's best ``search.proxy_check`` distinct networks by search score (NNI trials and corners,
    so the one-rule networks are among them when they score so), with their score at every fidelity (rung) the
    search trained them at; chosen once, in ``proxy/candidates.json``."""
    with _proxy_lock:  # the proxy tasks run in parallel threads: the first one chooses, the others read its choice
        return _proxy_candidates(config, study_dir)


_proxy_lock = threading.Lock()


def _proxy_candidates(config: StudyConfig, study_dir: Path) -> list[dict[str, Any]]:
    path = study_dir / PROXY / "candidates.json"
    if path.is_file():
        return json.loads(path.read_text())
    search = json.loads((study_dir / SEARCH / config.compare / "search.json").read_text())
    corner_of = {json.dumps(c["sample"], sort_keys=True): c["arm"] for c in search.get("corners", [])}
    scored = [(t["id"], t["sample"], t.get("epochs", config.search.epochs), t["val_acc"])
              for t in search.get("trials", []) if t["status"] == "SUCCEEDED" and t["val_acc"] is not None]
    scored += [(f"corner:{c['arm']}", c["sample"], config.search.epochs, c["val_acc"])
               for c in search.get("corners", []) if c.get("val_acc") is not None and not c.get("in_search")]
    best: dict[str, dict[str, Any]] = {}
    for trial_id, sample, epochs, score in scored:  # a network counts once, with its best score at each fidelity
        key = json.dumps(sample, sort_keys=True)
        row = best.setdefault(key, {"sample": sample, "rungs": {}, "ids": {}})
        if score > row["rungs"].get(str(epochs), -math.inf):
            row["rungs"][str(epochs)], row["ids"][str(epochs)] = score, trial_id
    for key, row in best.items():  # ranked by the highest fidelity it reached, then its score there
        top = max(row["rungs"], key=int)
        row["id"] = f"corner:{corner_of[key]}" if key in corner_of else row["ids"][top]
        row["search_epochs"], row["search_val_acc"] = int(top), row["rungs"][top]
        del row["ids"]
    chosen = sorted(best.values(), key=lambda r: (-r["search_epochs"], -r["search_val_acc"]))
    chosen = chosen[:config.search.proxy_check]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, chosen)
    return chosen


def proxy_dir(study_dir: Path, index: int) -> Path:
    return study_dir / PROXY / f"p{index}"


def proxy_done(study_dir: Path, index: int) -> bool:
    folder = proxy_dir(study_dir, index)
    result = folder / "run" / "result.json"
    return (folder / "no-candidate.json").is_file() or (
        result.is_file() and json.loads(result.read_text()).get("status") == "complete")


def run_proxy(config: StudyConfig, index: int, study_dir: Path, slot: Slot) -> None:
    """Retrain the ``index``-th best search candidate with the final recipe and the first retraining seed."""
    folder = proxy_dir(study_dir, index)
    folder.mkdir(parents=True, exist_ok=True)
    candidates = proxy_candidates(config, study_dir)
    if index >= len(candidates):  # the search kept fewer distinct networks than asked for
        write_json(folder / "no-candidate.json", {"candidates": len(candidates)})
        return
    train_sample(config, candidates[index]["sample"], folder, slot)


__all__ = ["ATTACK", "LANDSCAPE", "PROXY", "RETRAIN", "SEARCH", "Slot", "StageFailed", "attack_arguments",
           "attack_dir", "attack_done", "cli_flags", "evaluate_corners", "failure", "landscape_dir", "landscape_done",
           "landscape_networks", "mark_failed", "proxy_candidates", "proxy_dir", "proxy_done", "repeats",
           "retrain_arguments", "retrain_dir", "retrain_done", "run_attack", "run_landscape", "run_name", "run_proxy",
           "run_retrain", "run_search", "search_dir", "search_done", "space_size", "train_arguments", "train_sample", "trial_command"]
