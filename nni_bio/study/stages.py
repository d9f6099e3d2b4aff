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

from nni_bio.errors import NniBioError
from nni_bio.final_training import write_json

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
    from nni_bio.commands.export_space import space_json

    with _space_lock:
        return space_json(config.space, config.dataset, config.arm_space_args(arm), fmt)


def space_size(config: StudyConfig, arm: str) -> tuple[dict[str, Any], int]:
    """The arm's search space (NNI's choice format) and its number of architectures."""
    space = space_file(config, arm)
    return space, math.prod(len(v["_value"]) for v in space.values())


def _tuner(config: StudyConfig) -> tuple[dict[str, Any], str]:
    """The ``tuner`` section and the search-space format for the study's multi-trial strategy; every tuner is
    seeded with the study's ``seed`` (``search.tuner_args`` may override it)."""
    s = config.search
    seeded = {"seed": config.seed, **s.tuner_args}
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


def shared_augmentation(config: StudyConfig) -> dict[str, Any]:
    """The retraining's augmentation (``no_augment``, ``cutout``), which multi-trial search trials use too, so the
    search scores networks on the images the final recipe trains on."""
    return {key: config.retrain.args[key] for key in ("no_augment", "cutout") if key in config.retrain.args}


def trial_command(config: StudyConfig, arm: str, slot: Slot, folder: Path) -> tuple[str, list[str]]:
    """The module (``python -m``) and arguments of the arm's search: NNI's trial (multi-trial) or the one-shot run."""
    common = ["--space", config.space, "--space-args", json.dumps(config.arm_space_args(arm), sort_keys=True),
              "--dataset", config.dataset, "--epochs", str(config.search.epochs), "--device", slot.device]
    if config.data_dir:
        common += ["--data-dir", config.data_dir]
    if not config.search.one_shot:
        return "nni_bio.trial", [*common, *cli_flags({**shared_augmentation(config), **config.search.train})]
    hparams = {**config.search.train, **config.search.hparams}
    return "nni_bio.strategies.oneshot.trial", [
        "--strategy", config.search.strategy, *common, "--threads", str(slot.threads), "--hparams", json.dumps(hparams),
        "--output", str(folder / "oneshot"), "--resume"]


def experiment_yaml(config: StudyConfig, arm: str, folder: Path, slot: Slot,
                    max_trials: int | None = None) -> dict[str, Any]:
    """The NNI experiment that searches one arm (written to ``search/<arm>/experiment.yml``)."""
    tuner, fmt = _tuner(config)
    (folder / "search_space.json").write_text(json.dumps(space_file(config, arm, fmt), indent=2) + "\n")
    module, arguments = trial_command(config, arm, slot, folder)
    trial = [sys.executable, "-m", module, *arguments]
    return {
        "experimentName": f"nni-bio study {config.name}: arm {arm} ({', '.join(config.arms[arm])})",
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

    from nni_bio import experiment as ex

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
    from nni_bio import experiment as ex

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


def run_search(config: StudyConfig, arm: str, study_dir: Path, slot: Slot, say=print) -> dict[str, Any]:
    """Search one arm and write ``search/<arm>/search.json`` (and ``genotype.json``)."""
    from nni_bio.search_spaces import space_class
    from nni_bio.search_spaces import space_arguments

    folder = study_dir / SEARCH / arm
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
        return _search_one_shot(config, arm, folder, space_cls, space_args, slot, started)
    return _search_multi_trial(config, arm, folder, space_cls, space_args, size, slot, started, say)


def _search_multi_trial(config, arm, folder, space_cls, space_args, size, slot, started, say) -> dict[str, Any]:
    import yaml

    from nni_bio import experiment as ex

    log = folder / "search.log"
    corners = evaluate_corners(config, arm, folder.parent.parent, slot)
    budget = max(1, config.search.max_trials - len(corners["evaluated"]))  # the corners are trials of the budget
    (folder / "experiment.yml").write_text(yaml.safe_dump(experiment_yaml(config, arm, folder, slot, budget),
                                                          sort_keys=False))
    client, exp_id, port = _follow_or_create(folder, log, config.search.listen)
    say(f"search {arm}: NNI experiment {exp_id}, web UI {ex.web_ui_hint(port, config.search.listen)}")
    try:
        trials = ex.wait(client, budget, math.inf, progress=False)
    finally:
        ex.stop(exp_id)
    records = [{"id": t.id, "status": t.status, "val_acc": t.score,
                "sample": {k: ex.unwrap_choice(v) for k, v in t.parameters.items()}} for t in trials]
    started = json.loads((folder / "experiment.json").read_text()).get("started", started)
    summary = {"strategy": config.search.strategy, "experiment_id": exp_id, "architectures": size,
               "trials": records, "corners": corners["evaluated"], "corners_unreachable": corners["unreachable"],
               "seconds": round(time.time() - started + corners["seconds"], 1),
               "trial_epochs": config.search.epochs * (len(records) + len(corners["evaluated"])),
               "web_ui": f"nnictl view {exp_id} --experiment_dir {folder / 'nni'}"}
    candidates = [(r["val_acc"], r["id"], r["sample"]) for r in records
                  if r["status"] == "SUCCEEDED" and r["val_acc"] is not None]
    candidates += [(c["val_acc"], f"corner:{c['arm']}", c["sample"]) for c in corners["evaluated"]
                   if c.get("val_acc") is not None]
    if not candidates:
        reasons = f"all {len(trials)} trials failed" if trials else "no trial ran"
        mark_failed(folder, f"{reasons}; trial logs under {folder / 'nni' / exp_id / 'trials'}")
        write_json(folder / "search.json", {**summary, "status": "failed", "reason": reasons})
        raise StageFailed(f"arm {arm}: {reasons}")
    score, best_id, sample = max(candidates, key=lambda c: c[0])  # validation accuracy, ties: the first
    return _finish_search(folder, space_cls.export_genotype(sample, space_args),
                          {**summary, "status": "complete", "best_trial": best_id, "best_val_acc": score})


def evaluate_corners(config: StudyConfig, arm: str, study_dir: Path, slot: Slot) -> dict[str, Any]:
    """Train the arm's corners (:mod:`nni_bio.study.corners`) as trials of its own search: same trial command,
    fidelity and split, one ``python -m nni_bio.trial --sample`` each; finished ones are kept across runs."""
    from nni_bio.study.corners import corner_arms, in_space

    space = space_file(config, arm)
    evaluated, unreachable, seconds = [], [], 0.0
    module, arguments = trial_command(config, arm, slot, study_dir / SEARCH / arm)
    for other in corner_arms(config, arm):
        theirs = json.loads((study_dir / SEARCH / other / "genotype.json").read_text())
        sample = in_space(theirs["sample"], space)
        if sample is None:
            unreachable.append(other)
            continue
        out = study_dir / SEARCH / arm / "corners" / other
        result = out / "result.json"
        if not result.is_file():
            started = time.time()
            run_child([sys.executable, "-m", module, *arguments, "--sample", json.dumps(sample, sort_keys=True),
                       "--output", str(out)], out.parent / f"{other}.log", slot)
            seconds += time.time() - started
        score = json.loads(result.read_text()).get("default")
        evaluated.append({"arm": other, "sample": sample, "val_acc": score})
    return {"evaluated": evaluated, "unreachable": unreachable, "seconds": seconds}


def _search_one_shot(config, arm, folder, space_cls, space_args, slot, started) -> dict[str, Any]:
    run_dir = folder / "oneshot"
    module, arguments = trial_command(config, arm, slot, folder)
    run_child([sys.executable, "-m", module, *arguments], folder / "search.log", slot)
    genotype = json.loads((run_dir / "genotype.json").read_text())
    result = json.loads((run_dir / "result.json").read_text())
    return _finish_search(folder, genotype, {
        "status": "complete", "strategy": config.search.strategy, "architectures": None, "trials": [],
        "seconds": round(time.time() - started, 1), "trial_epochs": config.search.epochs,
        "best_val_acc": result.get("derived_val_acc", result.get("default")),
        "supernet_val_acc": result.get("supernet_val_acc", result.get("default"))})


def _finish_search(folder: Path, genotype: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    write_json(folder / "genotype.json", genotype)
    summary = {**summary, "genotype": genotype}
    write_json(folder / "search.json", summary)
    return summary


def search_done(study_dir: Path, arm: str) -> bool:
    path = study_dir / SEARCH / arm / "search.json"
    return path.is_file() and json.loads(path.read_text()).get("status") == "complete"


# ------------------------------------------------------------------------------- retrain and attack

def retrain_dir(study_dir: Path, arm: str, seed: int) -> Path:
    return study_dir / RETRAIN / arm / f"s{seed}"


def attack_dir(study_dir: Path, arm: str, seed: int) -> Path:
    return study_dir / ATTACK / arm / f"s{seed}"


def retrain_done(study_dir: Path, arm: str, seed: int) -> bool:
    path = retrain_dir(study_dir, arm, seed) / "result.json"
    return path.is_file() and json.loads(path.read_text()).get("status") == "complete"


def run_retrain(config: StudyConfig, arm: str, seed: int, study_dir: Path, slot: Slot) -> None:
    """``nni-bio train`` of the arm's genotype with one seed (resumed if interrupted)."""
    out = retrain_dir(study_dir, arm, seed)
    run_child([sys.executable, "-m", "nni_bio.cli", *retrain_arguments(config, arm, seed, study_dir, slot)],
              out.parent / f"s{seed}.log", slot)


def retrain_arguments(config: StudyConfig, arm: str, seed: int, study_dir: Path, slot: Slot) -> list[str]:
    """The ``nni-bio`` arguments of one retraining."""
    return train_arguments(config, study_dir / SEARCH / arm / "genotype.json", retrain_dir(study_dir, arm, seed), seed,
                           slot)


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
    so the one-rule networks are among them when they score so); chosen once, in ``proxy/candidates.json``."""
    path = study_dir / PROXY / "candidates.json"
    if path.is_file():
        return json.loads(path.read_text())
    search = json.loads((study_dir / SEARCH / config.compare / "search.json").read_text())
    scored = [{"id": t["id"], "sample": t["sample"], "search_val_acc": t["val_acc"]} for t in search.get("trials", [])
              if t["status"] == "SUCCEEDED" and t["val_acc"] is not None]
    scored += [{"id": f"corner:{c['arm']}", "sample": c["sample"], "search_val_acc": c["val_acc"]}
               for c in search.get("corners", []) if c.get("val_acc") is not None]
    best: dict[str, dict[str, Any]] = {}
    for row in scored:  # a network the tuner proposed twice counts once, with its best score
        key = json.dumps(row["sample"], sort_keys=True)
        if key not in best or row["search_val_acc"] > best[key]["search_val_acc"]:
            best[key] = row
    chosen = sorted(best.values(), key=lambda r: -r["search_val_acc"])[:config.search.proxy_check]
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
           "landscape_networks", "mark_failed", "proxy_candidates", "proxy_dir", "proxy_done", "retrain_arguments",
           "retrain_dir", "retrain_done", "run_attack", "run_landscape", "run_proxy", "run_retrain", "run_search",
           "search_done", "space_size", "train_arguments", "train_sample", "trial_command"]
