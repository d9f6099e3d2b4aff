"""Run a study: every stage of every arm, in dependency order, ``jobs`` at a time, resumable.

The study folder holds ``study.json`` (the config and its fingerprint). A second run of the same
study skips every finished stage and continues the unfinished ones (a retraining resumes from its
last epoch, a search follows its still-running NNI experiment); a folder made from another config
is refused before anything is touched.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from nni_bio.core.safe_json import write_json
from nni_bio.study import stages
from nni_bio.study.config import StudyConfig, StudyConfigError
from nni_bio.study.corners import corner_arms


@dataclass
class Task:
    """One stage of one arm (and seed)."""

    key: str  # "search/mixed", "retrain/mixed/s0", "attack/mixed/s0"
    stage: str
    arm: str
    seed: int | None
    deps: list[str]
    folder: Path
    done: Callable[[], bool]
    run: Callable[[stages.Slot], object]
    state: str = "pending"  # pending, running, done, failed, skipped
    reason: str = ""
    seconds: float = field(default=0.0)


def plan(config: StudyConfig, study_dir: Path, say: Callable[[str], None] = print) -> list[Task]:
    """Every task of the study, searches first (they gate the rest), then retrains, then attacks."""
    tasks: list[Task] = []
    repeats = {arm: stages.repeats(config, arm) for arm in config.arms}
    for arm in config.arms:  # a multi-rule arm's search starts from its corners: the single-rule arms' networks
        for k in range(repeats[arm]):
            name = stages.run_name(arm, k)
            corners = [f"search/{stages.run_name(other, min(k, repeats[other] - 1))}"
                       for other in corner_arms(config, arm)]
            tasks.append(Task(f"search/{name}", stages.SEARCH, arm, None, corners, stages.search_dir(study_dir, arm, k),
                              lambda arm=arm, k=k: stages.search_done(study_dir, arm, k),
                              lambda slot, arm=arm, k=k: stages.run_search(config, arm, study_dir, slot, say, k)))
    for seed in config.retrain.seeds:  # every search's winner with every seed
        for arm in config.arms:
            for k in range(repeats[arm]):
                name = stages.run_name(arm, k)
                tasks.append(Task(f"retrain/{name}/s{seed}", stages.RETRAIN, arm, seed, [f"search/{name}"],
                                  stages.retrain_dir(study_dir, arm, seed, k),
                                  lambda arm=arm, seed=seed, k=k: stages.retrain_done(study_dir, arm, seed, k),
                                  lambda slot, arm=arm, seed=seed, k=k: stages.run_retrain(config, arm, seed,
                                                                                           study_dir, slot, k)))
    for seed in config.retrain.seeds:  # the first search's winner only: robustness is not the verdict's question
        for arm in config.arms:
            tasks.append(Task(f"attack/{arm}/s{seed}", stages.ATTACK, arm, seed, [f"retrain/{arm}/s{seed}"],
                              stages.attack_dir(study_dir, arm, seed),
                              lambda arm=arm, seed=seed: stages.attack_done(study_dir, arm, seed),
                              lambda slot, arm=arm, seed=seed: stages.run_attack(config, arm, seed, study_dir, slot)))
    for index in range(config.search.proxy_check):  # the search's measure against the final recipe's
        tasks.append(Task(f"proxy/p{index}", stages.PROXY, config.compare, None, [f"search/{config.compare}"],
                          stages.proxy_dir(study_dir, index), lambda index=index: stages.proxy_done(study_dir, index),
                          lambda slot, index=index: stages.run_proxy(config, index, study_dir, slot)))
    if config.landscape.networks:
        for network in stages.landscape_networks(config, study_dir):
            deps = [f"search/{network['corner']}"] if "corner" in network else []
            tasks.append(Task(f"landscape/{network['name']}", stages.LANDSCAPE, config.compare, None, deps,
                              stages.landscape_dir(study_dir, network["name"]),
                              lambda name=network["name"]: stages.landscape_done(study_dir, name),
                              lambda slot, network=network: stages.run_landscape(config, network, study_dir, slot)))
    return tasks


def claim_folder(config: StudyConfig, study_dir: Path) -> None:
    """Create the study folder, or check that it belongs to this very config (nothing is overwritten)."""
    record = study_dir / "study.json"
    if record.is_file():
        old = json.loads(record.read_text())
        if old.get("fingerprint") != config.fingerprint():
            new = config.as_dict()
            changed = sorted(k for k in new if old.get("config", {}).get(k) != new[k])
            raise StudyConfigError(
                f"{study_dir} holds another study (made from {old.get('source', '?')}; fields that differ: "
                f"{', '.join(changed) or 'none shown'}). Nothing was changed. Use another --output, or delete the "
                f"folder to start this study afresh.")
        return
    check_not_foreign(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    write_json(record, {"fingerprint": config.fingerprint(), "source": config.source, "config": config.as_dict(),
                        "created": time.time(), "commit": current_commit()})


def check_not_foreign(study_dir: Path) -> None:
    """Refuse a folder that holds files but no study (its lock file aside): nothing of the user's is touched."""
    if (study_dir / "study.json").is_file() or not study_dir.exists():
        return
    if any(p.name != ".lock" for p in study_dir.iterdir()):
        raise StudyConfigError(f"{study_dir} exists and is not a study folder (no study.json): choose another --output")


def current_commit() -> str | None:
    """The git commit of the nni-bio checkout in use (``None`` outside a checkout), with ``+dirty`` for local edits."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def slots(jobs: int) -> list[stages.Slot]:
    """One slot per job: the CPU cores split between jobs, one GPU each where GPUs exist."""
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # noqa: BLE001  (no usable CUDA: CPU slots)
        gpus = 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // jobs)
    return [stages.Slot(threads=threads, gpu=(i % gpus) if gpus else None) for i in range(jobs)]


def execute(tasks: list[Task], jobs: int, *, progress: bool = True, say: Callable[[str], None] = print,
            retry_failed: bool = False) -> list[Task]:
    """Run the unfinished tasks, ``jobs`` at a time, each when its dependencies are done.

    A failed task does not stop the others; the tasks that depend on it are skipped with its reason.
    """
    from tqdm import tqdm

    by_key = {t.key: t for t in tasks}
    for t in tasks:
        failed = stages.failure(t.folder)
        if t.done():
            t.state = "done"
        elif failed and not retry_failed:
            t.state, t.reason = "failed", failed
        elif failed:
            (t.folder / stages.FAILED).unlink()
    todo = [t for t in tasks if t.state == "pending"]
    finished_before = len(tasks) - len(todo)
    if finished_before:
        say(f"resuming: {finished_before} of {len(tasks)} stages already finished, {len(todo)} to run")
    bar = tqdm(total=len(tasks), initial=finished_before, unit="stage", disable=not progress, dynamic_ncols=True,
               file=sys.stderr)
    free = slots(jobs)
    running: dict[Future, tuple[Task, stages.Slot, float]] = {}

    def show() -> None:
        bar.set_description(", ".join(t.key for t, _, _ in running.values()) or "waiting", refresh=True)

    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            while todo or running:
                for t in list(todo):
                    deps = [by_key[d] for d in t.deps]
                    blocked = [d for d in deps if d.state in ("failed", "skipped")]
                    if blocked:
                        t.state, t.reason = "skipped", f"{blocked[0].key} {blocked[0].state}: {blocked[0].reason}"
                        todo.remove(t)
                        bar.update()
                    elif all(d.state == "done" for d in deps) and free:
                        slot = free.pop(0)
                        t.state = "running"
                        running[pool.submit(t.run, slot)] = (t, slot, time.time())
                        todo.remove(t)
                if not running:
                    if todo:  # nothing can start and nothing runs: only possible with a broken plan
                        raise RuntimeError(f"study tasks cannot start: {[t.key for t in todo]}")
                    break
                show()
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    t, slot, started = running.pop(future)
                    free.append(slot)
                    t.seconds = time.time() - started
                    error = future.exception()
                    if error is None and t.done():
                        t.state = "done"
                        message = f"done   {t.key} ({t.seconds:.0f} s)"
                    else:
                        t.state, t.reason = "failed", str(error or "finished without its output")
                        if stages.failure(t.folder) is None:
                            stages.mark_failed(t.folder, t.reason)
                        message = f"FAILED {t.key}: {t.reason}"
                    bar.update()
                    (tqdm.write if progress else say)(message)
    finally:
        bar.close()
    return tasks


__all__ = ["Task", "check_not_foreign", "claim_folder", "current_commit", "execute", "plan", "slots"]
