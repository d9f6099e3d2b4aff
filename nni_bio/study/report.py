"""The study report: ``report.md``, ``accuracy.csv``, ``robustness.csv`` and the figures.

Read from the study folder only, so it can be rebuilt at any time (``nni-bio study CONFIG --report-only``).
The verdict compares the ``compare`` arm (default ``mixed``) with the best single bio-inspired rule
arm and says whatever the numbers say.
"""

from __future__ import annotations

import csv
import json
import math
import platform
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from nni_bio.evaluate.robustness import eps_label
from nni_bio.study import figures, stages
from nni_bio.study.config import StudyConfig
from nni_bio.study.run_log import runs_table
from nni_bio.study.statistics import mean_std, nested_compare


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def collect(config: StudyConfig, study_dir: Path) -> dict[str, dict[str, Any]]:
    """Per arm: search summaries (``searches``, one per repeat; ``search`` is the first), retraining results
    (``runs``: repeat -> seed -> result; ``seeds`` is the first search's), attack rows, failures."""
    arms: dict[str, dict[str, Any]] = {}
    for arm in config.arms:
        info: dict[str, Any] = {"rules": config.arms[arm], "searches": {}, "runs": {}, "attacks": {}, "failures": []}
        for k in range(stages.repeats(config, arm)):
            name = "" if k == 0 else f" (repeat {k})"
            search = _read(stages.search_dir(study_dir, arm, k) / "search.json")
            if search:
                if "trial_seed" not in search and (stages.search_dir(study_dir, arm, k) / "experiment.yml").is_file():
                    search["trial_seed"] = stages.trial_seed(stages.search_dir(study_dir, arm, k))  # older folders
                info["searches"][k] = search
            if reason := stages.failure(stages.search_dir(study_dir, arm, k)):
                info["failures"].append(f"search{name}: {reason}")
            info["runs"][k] = {}
            for seed in config.retrain.seeds:
                result = _read(stages.retrain_dir(study_dir, arm, seed, k) / "result.json")
                if result and result.get("status") == "complete":
                    info["runs"][k][seed] = result
                elif reason := stages.failure(stages.retrain_dir(study_dir, arm, seed, k)):
                    info["failures"].append(f"retrain{name} seed {seed}: {reason}")
        info["search"], info["seeds"] = info["searches"].get(0), info["runs"].get(0, {})
        for seed in config.retrain.seeds:
            attack = _read(stages.attack_dir(study_dir, arm, seed) / "attack.json")
            if attack:
                info["attacks"][seed] = attack["rows"]
            elif reason := stages.failure(stages.attack_dir(study_dir, arm, seed)):
                info["failures"].append(f"attack seed {seed}: {reason}")
        arms[arm] = info
    return arms


def _pct(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{100 * mean:.2f} %" + ("" if math.isnan(std) else f" +- {100 * std:.2f}")


def _flat(groups: list[list[float]]) -> list[float]:
    return [v for g in groups for v in g]


def _units(groups: list[list[float]]) -> str:
    groups = [g for g in groups if g]
    if len(groups) > 1:
        return f"{len(groups)} searches x {max(map(len, groups))} seeds"
    return f"1 search x {len(groups[0]) if groups else 0} seeds"


def verdict(config: StudyConfig, accuracies: dict[str, list[list[float]]],
            validation: dict[str, list[list[float | None]]]) -> str:
    """One line: the ``compare`` arm vs the best single bio-rule arm, with its uncertainty.

    ``accuracies`` and ``validation`` hold, per arm, one list per independent search (its winner's final-epoch
    accuracy for each retraining seed). The best single arm is the one with the highest mean **validation**
    accuracy; test accuracies are only compared once that choice is made. The interval is nested
    (:func:`~nni_bio.study.statistics.nested_compare`): it holds search-to-search and seed variance.
    """
    target = config.compare
    singles = {a: v for a, v in accuracies.items() if len(config.arms[a]) == 1 and config.arms[a][0] != "backprop"
               and a != target and _flat(v)}
    if target not in accuracies or not _flat(accuracies[target]):
        return f"No verdict: the {target!r} arm has no finished retraining."
    if not singles:
        return f"No verdict: no single bio-rule arm finished to compare {target!r} with."
    scored = {a: [v for v in _flat(validation.get(a, [])) if v is not None] for a in singles}
    if not all(scored.values()):
        return ("No verdict: the single-rule arms have no validation accuracy to choose the best one by (retrained "
                "on train+val?); choosing it by test accuracy would bias the comparison.")
    best = max(scored, key=lambda a: sum(scored[a]) / len(scored[a]))
    c = nested_compare(accuracies[target], singles[best])
    if math.isnan(c.low):
        return (f"No verdict: {target} - {best} = {100 * c.difference:+.2f} points, but an interval needs at least 2 "
                "searches or seeds per arm.")
    if c.dof == math.inf:
        return (f"No verdict: {target} - {best} = {100 * c.difference:+.2f} points, and every run of each arm gave the "
                "same accuracy: with no spread there is no interval (too few test images, or too short a training?)")
    searched = len([g for g in accuracies[target] if g]) > 1
    variance = ("it holds search-to-search and seed variance (each search's mean over its seeds is one unit)"
                if searched else "it holds seed-to-seed variance only: the arm's search ran once (search.repeats: 1), "
                "so search-to-search variance is not in it")
    numbers = (f"{target} - {best} = {100 * c.difference:+.2f} test-accuracy points (Welch 95 % interval "
               f"[{100 * c.low:+.2f}, {100 * c.high:+.2f}], p = {c.p_value:.3g}, {_units(accuracies[target])} vs "
               f"{_units(singles[best])}; {best} chosen as the best single rule by validation accuracy). With this "
               f"spread the design detects a true difference of about {100 * c.detectable:.2f} points 80 % of the "
               f"time, and no smaller one reliably; {variance}")
    if c.significant:
        word = "better" if c.difference > 0 else "worse"
        return f"**{target} is {word} than the best single bio rule ({best})**: {numbers}."
    return f"**No significant difference between {target} and the best single bio rule ({best})**: {numbers}."


def _name_first_layer_exact(model: Any, layers: dict[str, str], counts: dict[str, int]) -> None:
    """Draw and count the first weight layer as ``exact local gradient`` where its rule is error-only (its input is
    the image, so every such rule gives it that update; the rule it was built with says nothing)."""
    from nni_bio.nas.candidates import EXACT_LOCAL_GRADIENT, changes_first_layer
    from nni_bio.core.layers import RuleLayer

    name, first = next(((n, m) for n, m in model.named_modules() if isinstance(m, RuleLayer)), (None, None))
    if first is None or changes_first_layer(first.rule_name):
        return
    layers[name] = EXACT_LOCAL_GRADIENT
    weights = sum(p.numel() for p in (first.weight, first.bias) if p is not None and p.requires_grad)
    counts[first.rule_name] -= weights
    if not counts[first.rule_name]:
        del counts[first.rule_name]
    counts[EXACT_LOCAL_GRADIENT] = counts.get(EXACT_LOCAL_GRADIENT, 0) + weights


def _curves(config: StudyConfig, arms: dict[str, dict[str, Any]]):
    """``{(attack, gradient): {arm: (eps, mean, std)}}`` of the worst-case accuracy over seeds."""
    by: dict[tuple[str, str], dict[str, dict[float, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for arm, info in arms.items():
        for rows in info["attacks"].values():
            for r in rows:
                by[(r["attack"], r["gradient"])][arm][r["eps"]].append(r.get("robust_acc", r["adv_acc"]))
    curves = {}
    for key, per_arm in sorted(by.items()):
        curves[key] = {}
        for arm, per_eps in per_arm.items():
            eps = sorted(per_eps)
            stats = [mean_std(per_eps[e]) for e in eps]
            curves[key][arm] = (eps, [s[0] for s in stats], [0.0 if math.isnan(s[1]) else s[1] for s in stats])
    return curves


def write_report(config: StudyConfig, study_dir: Path, report_dir: Path, *, wall_seconds: float | None = None,
                 command: str = "") -> Path:
    """Write the report files into ``report_dir``; return the Markdown file's path."""
    from nni_bio.train.final_training import weight_counts
    from nni_bio.train.model_spec import build_model, genotype_spec
    from nni_bio.core.swap import rule_map

    report_dir.mkdir(parents=True, exist_ok=True)
    arms = collect(config, study_dir)
    groups = {arm: [[runs[s]["final"]["test_acc"] for s in sorted(runs)] for runs in info["runs"].values()]
              for arm, info in arms.items()}
    validation = {arm: [[runs[s]["final"].get("val_acc") for s in sorted(runs)] for runs in info["runs"].values()]
                  for arm, info in arms.items()}
    accuracies = {arm: _flat(g) for arm, g in groups.items()}

    with (report_dir / "accuracy.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "rules", "search_repeat", "seed", "final_test_acc", "final_val_acc", "best_val_acc",
                    "best_val_epoch", "trainable_params", "learned_feedback_params", "search_best_val_acc",
                    "search_trials", "search_seconds"])
        for arm, info in arms.items():
            for k, runs in info["runs"].items():
                s = info["searches"].get(k) or {}
                for seed, r in sorted(runs.items()):
                    best_val = r.get("best_val") or {}  # none when retrained on train+val
                    w.writerow([arm, " ".join(info["rules"]), k, seed, r["final"]["test_acc"],
                                r["final"].get("val_acc"), best_val.get("val_acc"), best_val.get("epoch"),
                                r["trainable_params"], r.get("learned_feedback_params", ""),
                                s.get("best_val_acc"), len(s.get("trials", [])), s.get("seconds")])
    with (report_dir / "robustness.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "seed", "attack", "gradient", "eps", "clean_acc", "adv_acc", "robust_acc", "num_images"])
        for arm, info in arms.items():
            for seed, rows in sorted(info["attacks"].items()):
                for r in rows:
                    w.writerow([arm, seed, r["attack"], r["gradient"], r["eps"], r["clean_acc"], r["adv_acc"],
                                r.get("robust_acc"), r["num_images"]])

    title = f"{config.name}: {config.dataset}, space {config.space}, search {config.search.strategy}"
    figures.accuracy_figure(accuracies, report_dir / "accuracy.png", title)
    curves = _curves(config, arms)
    if curves:
        figures.robustness_figure(curves, report_dir / "robustness.png", title)
    drawn, counts = {}, {}
    for arm, info in arms.items():
        genotype = (info["search"] or {}).get("genotype")
        if genotype is None:
            continue
        spec = genotype_spec(genotype, width=config.retrain.args.get("width"), cells=config.retrain.args.get("cells"))
        model = build_model(spec, config.dataset)
        drawn[arm] = {"genotype": genotype, "layers": rule_map(model)}
        counts[arm] = weight_counts(model)
        _name_first_layer_exact(model, drawn[arm]["layers"], counts[arm])
    if drawn:
        figures.architecture_figure(drawn, report_dir / "architectures.png", f"{config.name}: found architectures")
    if counts:
        figures.weights_figure(counts, report_dir / "weights_per_rule.png", f"{config.name}: weights per rule")

    lines = [f"# Study `{config.name}`: does mixing learning rules help?", ""]
    lines += [verdict(config, groups, validation), ""]
    machine = f"{platform.machine()}, {_cores()} CPU cores" + (f", {_gpus()}" if _gpus() else "")
    lines += [f"- Data set **{config.dataset}**, search space **{config.space}** {json.dumps(config.space_args)}.",
              f"- Search: **{config.search.strategy}**, at most "
              + (f"{config.search.max_trials} trials per search, {' / '.join(map(str, stages.halving_rungs(config)[0]))} "
                 "epochs per rung (the corners, the single-rule arms' networks, are trained at every rung inside that "
                 "budget)" if config.search.strategy == "halving" else
                 f"{config.search.max_trials} trials x {config.search.epochs} epochs per search (a multi-rule arm's "
                 "corners, the single-rule arms' networks, count as trials of its budget)" if not config.search.one_shot
                 else f"{config.search.epochs} supernet epochs per search")
              + (f", {config.search.repeats} independent searches per searched arm" if config.search.repeats > 1
                 else "")
              + f", trial settings {json.dumps(config.search.train)}; what each arm's search ran is below.",
              f"- Random sources: every search's tuner is seeded with the study seed {config.seed}"
              + (f" plus the repeat's index (repeats 0..{config.search.repeats - 1} of each searched arm; "
                 + _trial_seeds(arms) + ")" if config.search.repeats > 1 else "") + "; the train/"
              f"validation split is drawn with seed {config.search.train.get('seed', 0)} in search trials and "
              f"{config.retrain.args.get('split_seed', 0)} in retrainings; a search trial's weights and batches come "
              f"from seed {config.search.train.get('seed', 0)}, a retraining's from its own seed.",
              f"- Retraining from scratch with `nni-bio train`: {config.retrain.epochs} epochs, seeds "
              f"{config.retrain.seeds}, {json.dumps(config.retrain.args)}; the number is the **final-epoch test "
              f"accuracy** (never a best-epoch pick).",
              f"- Attacks (`nni-bio attack`): {', '.join(config.attack.attacks)} at eps {config.attack.eps} on the first "
              f"{config.attack.num_images} test images; white-box attacks through the rule's own gradient and the "
              f"exact-gradient (bp) view.",
              f"- Produced by `{_command(study_dir, command) or 'nni-bio study ' + config.source}` ({_code_version(study_dir)}) on {machine}"
              + (f" in {wall_seconds / 60:.1f} minutes of wall time (summed over its runs, below)" if wall_seconds
                 else "") + f", "
              f"{time.strftime('%Y-%m-%d')}.", ""]
    presets = sorted({r["preset"] for i in arms.values() for r in i["seeds"].values() if r.get("preset")})
    if presets:
        lines.insert(-2, f"- DARTS layer preset: {', '.join(presets)} (`bio`: no backprop layer anywhere; `reference`: "
                     "the reference code's backprop stem, pre-processing, classifier and auxiliary head).")
    lines += ["## Accuracy", "", "Mean +- std over every retraining of the arm (every search's winner, every seed); "
              "the search columns are the first search's.", "",
              "| arm | rules | final-epoch test accuracy (mean +- std) | runs | search: best val acc "
              "| search: trials | search: minutes |", "|---|---|---|---|---|---|---|"]
    for arm, info in arms.items():
        s = info["search"] or {}
        mean, std = mean_std(accuracies[arm])
        trials = s.get("trials", [])
        n_trials = f"{sum(t['status'] == 'SUCCEEDED' for t in trials)}/{len(trials)}" if trials else (
            "none: 1 architecture" if s.get("architectures") == 1 else "one-shot" if s else "-")
        if s.get("corners"):
            n_trials += f" + {len(s['corners'])} corner{'s' if len(s['corners']) > 1 else ''}"
        best = "-" if s.get("best_val_acc") is None else f"{s['best_val_acc']:.4f}"
        minutes = "-" if not s else f"{s.get('seconds', 0) / 60:.1f}"
        lines.append(f"| {arm} | {', '.join(info['rules'])} | {_pct(mean, std)} | {_units(groups[arm])} | "
                     f"{best} | {n_trials} | {minutes} |")
    twins = [(a, b) for i, a in enumerate(arms) for b in list(arms)[i + 1:] if accuracies[a] and
             accuracies[a] == accuracies[b]]
    for a, b in twins:
        lines += ["", f"Arms `{a}` and `{b}` gave identical accuracies for every seed: they trained the same network "
                  f"(see their architectures below; e.g. DFA and FA are the same rule in a network's last weight layer, "
                  f"and a layer's feedback matrix is drawn from the same per-layer stream whatever its rule)."]
    lines += ["", "![accuracy](accuracy.png)", ""]
    lines += convergence(config, arms, report_dir)
    lines += search_budgets(config, arms)
    lines += reproduce(config, arms, study_dir, report_dir)
    lines += proxy_section(config, study_dir, report_dir)
    lines += landscape_section(config, study_dir, report_dir)
    broken = {arm: info["failures"] for arm, info in arms.items() if info["failures"]}
    if broken:
        lines += ["## Broken arms and stages", ""]
        lines += [f"- **{arm}**: " + "; ".join(f) for arm, f in broken.items()] + [""]
    if curves:
        lines += ["## Robustness", "", "Accuracy under attack (worst case over all budgets up to eps), mean +- std over "
                  "seeds. `rule` attacks through the network's own backward, `bp` through exact gradients of the same "
                  "weights; for the backprop arm both are the same.", ""]
        for (attack, gradient), per_arm in curves.items():
            eps = sorted({e for v in per_arm.values() for e in v[0]})
            lines += [f"**{attack.upper()}, gradient {gradient}**", "",
                      "| arm | " + " | ".join(f"eps {eps_label(e)}" for e in eps) + " |", "|---|" + "---|" * len(eps)]
            for arm, (es, means, stds) in per_arm.items():
                cells = {e: f"{m:.3f} +- {s:.3f}" for e, m, s in zip(es, means, stds)}
                lines.append(f"| {arm} | " + " | ".join(cells.get(e, "") for e in eps) + " |")
            lines.append("")
        lines += ["![robustness](robustness.png)", ""]
    if drawn:
        lines += ["## Found architectures", "", "| arm | architecture (slot: candidate) | weights per rule |",
                  "|---|---|---|"]
        for arm, d in drawn.items():
            sample = d["genotype"].get("sample", {})
            text = ", ".join(f"{k}: {v}" for k, v in sorted(sample.items()) if "/input_" not in k) or "fixed"
            lines.append(f"| {arm} | {text} | {json.dumps(counts.get(arm, {}))} |")
        lines += ["", "![architectures](architectures.png)", "", "![weights per rule](weights_per_rule.png)", ""]
    runs = runs_table(study_dir)
    if runs:
        lines += ["## Runs", "", "Each run of `nni-bio study` on this folder (a killed run counts up to its last "
                  "heartbeat, a few seconds before the kill); the wall time above is the sum of the counted runs.", ""]
        lines += runs + [""]
    lines += ["## Files", "", "`accuracy.csv` (one row per arm and seed), `robustness.csv` (one row per arm, seed, "
              "attack, gradient view and eps), `search_trials.csv` (every search trial and corner), `genotypes/`. "
              "The study folder holds every run (`retrain/<arm>/s<seed>/`: `result.json`, TensorBoard logs, weights) and every search (`search/<arm>/`: `search.json`, the NNI "
              "experiment)."]
    path = report_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


#: an arm whose validation accuracy still moved by more than this over the last fifth of its epochs has not converged
CONVERGED_WITHIN = 0.005


def learning_curves(arms: dict[str, dict[str, Any]]) -> dict[str, list[float]]:
    """Arm -> mean validation accuracy per retraining epoch over its finished seeds (empty without validation)."""
    import numpy as np

    curves = {}
    for arm, info in arms.items():
        runs = [[m.get("val_acc") for m in r.get("history", [])] for by_seed in (info.get("runs") or {0: info["seeds"]}).values()
                for r in by_seed.values()]
        runs = [run for run in runs if run and all(v is not None for v in run)]
        if runs and len({len(run) for run in runs}) == 1:
            curves[arm] = [float(v) for v in np.mean(np.asarray(runs, dtype=float), axis=0)]
    return curves


def unconverged(curves: dict[str, list[float]], within: float = CONVERGED_WITHIN) -> dict[str, float]:
    """Arm -> how far its curve moved over the last fifth of its epochs, for arms that moved more than ``within``."""
    moved = {}
    for arm, values in curves.items():
        tail = values[-max(2, len(values) // 5 + 1):]
        if len(values) >= 2 and max(tail) - min(tail) > within:
            moved[arm] = max(tail) - min(tail)
    return moved


def convergence(config: StudyConfig, arms: dict[str, dict[str, Any]], report_dir: Path) -> list[str]:
    """The learning-curve figure and a warning for every arm still moving at the end of its retraining."""
    curves = learning_curves(arms)
    if not curves:
        return []
    figures.learning_curves_figure(curves, report_dir / "learning_curves.png",
                                   f"{config.name}: validation accuracy while retraining")
    lines = ["## Learning curves", ""]
    moved = unconverged(curves)
    if moved:
        lines += [f"**Warning: not converged.** Over the last fifth of their {config.retrain.epochs} epochs these arms' "
                  f"mean validation accuracy still moved by more than {100 * CONVERGED_WITHIN:.1f} points: "
                  + ", ".join(f"{arm} ({100 * d:.1f} points)" for arm, d in moved.items())
                  + ". Longer retraining may change the comparison.", ""]
    else:
        lines += [f"Every arm's mean validation accuracy moved by at most {100 * CONVERGED_WITHIN:.1f} points over the "
                  "last fifth of its epochs.", ""]
    return lines + ["![learning curves](learning_curves.png)", ""]


def reproduce(config: StudyConfig, arms: dict[str, dict[str, Any]], study_dir: Path, report_dir: Path) -> list[str]:
    """Copy each arm's genotype and every search trial beside the report; give the command of every row."""
    import shutil

    from nni_bio.study.stages import Slot, retrain_arguments

    genotypes = report_dir / "genotypes"
    with (report_dir / "search_trials.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "search_repeat", "kind", "id", "status", "epochs", "val_acc", "sample"])
        for arm, info in arms.items():
            for k, s in info["searches"].items():
                for t in s.get("trials", []):
                    w.writerow([arm, k, "trial", t["id"], t["status"], t.get("epochs", config.search.epochs),
                                t["val_acc"], json.dumps(t["sample"], sort_keys=True)])
                for c in s.get("corners", []):
                    if c.get("in_search"):
                        continue  # a trial of the tuner's schedule: its rows are above
                    w.writerow([arm, k, "corner", f"corner:{c['arm']}", "SUCCEEDED" if c.get("val_acc") is not None
                                else "FAILED", config.search.epochs, c.get("val_acc"),
                                json.dumps(c["sample"], sort_keys=True)])
    lines = ["## Reproducing a row", "", "Each search's network is in `genotypes/<arm>[-repeat<k>].json` beside this "
             "report, every search trial in `search_trials.csv`. A row of `accuracy.csv` is rebuilt by (from this "
             "folder):", ""]
    seed = config.retrain.seeds[0]
    for arm, info in arms.items():
        for k in info["runs"]:
            source = stages.search_dir(study_dir, arm, k) / "genotype.json"
            if not source.is_file():
                continue
            name = stages.run_name(arm, k).replace("/", "-")
            genotypes.mkdir(exist_ok=True)
            shutil.copyfile(source, genotypes / f"{name}.json")
            args = retrain_arguments(config, arm, seed, study_dir, Slot(), k)
            args[args.index("--genotype") + 1] = f"genotypes/{name}.json"
            args[args.index("--output") + 1] = f"runs/{name}-s{seed}"
            args = [a for a in args if a != "--resume"]
            lines.append(f"- `{name}`: `nni-bio {' '.join(args)}` (other seeds: `--seed`)")
    return lines + [""]


def proxy_section(config: StudyConfig, study_dir: Path, report_dir: Path) -> list[str]:
    """``proxy.csv``, ``proxy.png`` and whether the search's score ranks networks as the final recipe does."""
    from nni_bio.study.statistics import rank_agreement

    candidates_file = study_dir / stages.PROXY / "candidates.json"
    if not config.search.proxy_check or not candidates_file.is_file():
        return []
    rows = []
    for index, candidate in enumerate(json.loads(candidates_file.read_text())):
        result = _read(stages.proxy_dir(study_dir, index) / "run" / "result.json") or {}
        done = result.get("status") == "complete"
        rows.append({**candidate, "final_val_acc": result["final"].get("val_acc") if done else None,
                     "final_test_acc": result["final"]["test_acc"] if done else None})
    with (report_dir / "proxy.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["candidate", "search_epochs", "search_val_acc", "search_val_acc_per_rung", "final_val_acc",
                    "final_test_acc", "sample"])
        for r in rows:
            w.writerow([r["id"], r.get("search_epochs", config.search.epochs), r["search_val_acc"],
                        json.dumps(_rungs(config, r), sort_keys=True), r["final_val_acc"], r["final_test_acc"],
                        json.dumps(r["sample"], sort_keys=True)])
    finished = [r for r in rows if r["final_val_acc"] is not None]
    lines = ["## The search's proxy, checked", ""]
    if len(finished) < 4:
        return lines + [f"Only {len(finished)} of the {len(rows)} candidates retrained: too few to say.", ""]
    figures.proxy_figure(finished, report_dir / "proxy.png", f"{config.name}: search score vs final recipe "
                         f"({config.compare})")
    images = config.search.train.get("train_limit") or "all"
    rungs = sorted({int(e) for r in finished for e in _rungs(config, r)})
    lines += [f"The `{config.compare}` arm's {len(finished)} best distinct search candidates (NNI trials and corners, "
              f"ranked by the highest fidelity they reached, then their score there), scored by the search on {images} "
              f"training images and retrained with the final recipe (seed {config.retrain.seeds[0]}); both on "
              "validation accuracy. One row per fidelity (rung) of the search, over the candidates it trained there:",
              "", "| search fidelity | candidates | Kendall tau (95 % interval) | Spearman rho (95 % interval) |",
              "|---|---|---|---|"]
    judged = None  # the highest fidelity with enough candidates for an interval
    for epochs in rungs:
        at = [r for r in finished if str(epochs) in _rungs(config, r)]
        agree = rank_agreement([_rungs(config, r)[str(epochs)] for r in at], [r["final_val_acc"] for r in at])
        if not math.isnan(agree.tau_low) and not math.isnan(agree.rho_low):
            judged = (epochs, agree)
        perfect = abs(agree.tau) > 1 - 1e-9 and agree.n >= 2
        tau_text = (f"perfect order (by chance: 1 in {math.factorial(agree.n):,})" if perfect
                    else _interval(agree.tau_low, agree.tau_high))
        rho_text = "the Fisher interval is degenerate at +-1" if perfect else _interval(agree.rho_low, agree.rho_high)
        lines.append(f"| {epochs} epoch(s) | {agree.n} | {agree.tau:+.2f} ({tau_text}) | {agree.rho:+.2f} ({rho_text}) |")
    if judged is None:
        sentence = ("**Whether the proxy can be trusted cannot be said**: no fidelity trained enough of these candidates "
                    "(5) for an interval.")
    else:
        epochs, agree = judged
        where = ("the fidelity the search chooses by" if epochs == rungs[-1] else
                 f"the highest fidelity with enough candidates for an interval (the top rung, {rungs[-1]} epochs, "
                 "trained too few)")
        sentence = (f"**The proxy can be trusted to rank these networks**: at {where}, {epochs} epochs, " + (
                    f"it ranks the {agree.n} candidates in exactly their final order (a chance of 1 in "
                    f"{math.factorial(agree.n):,} if it ranked them at random)." if agree.tau > 1 - 1e-9 else
                    "both intervals lie above zero.") if agree.rho_low > 0 and agree.tau_low > 0 else
                    f"**The proxy cannot be trusted to rank these networks**: at {where}, {epochs} epochs, an interval "
                    "reaches zero or below, so the search's choice says little about which network is best after full "
                    "training.")
    lines += ["", "- " + sentence,
        "- The candidates are the search's best, so their scores span a narrow range: a rank correlation among them "
        "is lower than over the whole space, and says how well the proxy picks among good networks.",
        "", "![proxy check](proxy.png)", ""]
    return lines


def _interval(low: float, high: float) -> str:
    return "too few for an interval" if math.isnan(low) else f"{low:+.2f} to {high:+.2f}"


def _rungs(config: StudyConfig, row: dict[str, Any]) -> dict[str, float]:
    """A proxy candidate's search score per fidelity (candidates chosen before rungs existed: the one fidelity)."""
    return row.get("rungs") or {str(config.search.epochs): row["search_val_acc"]}


def landscape_section(config: StudyConfig, study_dir: Path, report_dir: Path) -> list[str]:
    """``landscape.csv``, ``landscape.png`` and the search-free answer (:mod:`nni_bio.study.landscape`)."""
    from nni_bio.study.landscape import analyse, rules_of

    networks_file = study_dir / stages.LANDSCAPE / "networks.json"
    if not config.landscape.networks or not networks_file.is_file():
        return []
    space = stages.space_file(config, config.compare)
    rows = []
    for network in json.loads(networks_file.read_text()):
        genotype = _read(stages.landscape_dir(study_dir, network["name"]) / "genotype.json") or {}
        result = _read(stages.landscape_dir(study_dir, network["name"]) / "run" / "result.json") or {}
        done = result.get("status") == "complete"
        sample = network.get("sample") or genotype.get("sample")
        rows.append({"name": network["name"], "kind": network["kind"], "one_rule": network.get("one_rule"),
                     "sample": sample, "rules": rules_of(sample, space) if sample else [],
                     "val_acc": result["final"].get("val_acc") if done else None,
                     "test_acc": result["final"]["test_acc"] if done else None})
    with (report_dir / "landscape.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["network", "kind", "one_rule", "distinct_rules", "rules", "final_val_acc", "final_test_acc",
                    "sample"])
        for r in rows:
            w.writerow([r["name"], r["kind"], r["one_rule"] or "", len(r["rules"]), " ".join(r["rules"]), r["val_acc"],
                        r["test_acc"], json.dumps(r["sample"], sort_keys=True)])
    finished = [r for r in rows if r["val_acc"] is not None and r["sample"]]
    if not finished:
        return ["## Rule landscape", "", "No landscape network has finished training yet.", ""]
    land = analyse(finished, space)
    figures.landscape_figure(finished, report_dir / "landscape.png", f"{config.name}: rule landscape of "
                             f"{config.compare}'s space")
    seed = config.retrain.seeds[0]
    lines = ["## Rule landscape (no search)", "",
             f"{land.networks} networks of the `{config.compare}` arm's space ({len(rows) - len(finished)} unfinished), "
             f"each trained with the retraining recipe and seed {seed}, compared on final-epoch **validation** "
             "accuracy (test accuracy is in `landscape.csv`, never used here)."]
    if land.best_one_rule:
        share, low, high = land.fraction
        lines += ["", f"- The best one-rule network (**{land.best_one_rule}**, {100 * land.best_one_rule_score:.2f} %) "
                  f"ranks {land.rank} of {land.networks}.",
                  f"- {land.mixed_better} of the {land.mixed} networks with two or more rules beat it: "
                  + (f"{100 * share:.1f} % (Clopper-Pearson 95 % interval {100 * low:.1f}-{100 * high:.1f} %)."
                     if land.mixed else "none were trained.")]
    lines += ["", "| distinct rules | networks | mean validation accuracy | 95 % interval |", "|---|---|---|---|"]
    for count, (n, mean, low, high) in land.by_rule_count.items():
        interval = "-" if math.isnan(low) else f"{100 * low:.2f}-{100 * high:.2f} %"
        lines.append(f"| {count} | {n} | {100 * mean:.2f} % | {interval} |")
    rules = sorted({rule for per in land.per_slot.values() for rule in per})
    lines += ["", "Per slot: mean validation accuracy (and networks) of the networks whose slot uses each rule.", "",
              "| slot | " + " | ".join(rules) + " |", "|---|" + "---|" * len(rules)]
    for label, per in land.per_slot.items():
        cells = [f"{100 * per[r][1]:.1f} % ({per[r][0]})" if r in per else "" for r in rules]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + ["", "![rule landscape](landscape.png)", ""]


def search_budgets(config: StudyConfig, arms: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown: what each arm's search ran (trials, corners, epochs, images, minutes) and what it kept."""
    images = config.search.train.get("train_limit") or "all"
    shared = stages.shared_augmentation(config)
    augmentation = ("standard augmentation (one-shot supernets always)" if config.search.one_shot else
                    ("no augmentation" if shared.get("no_augment") else "standard augmentation")
                    + (f" and Cutout {shared['cutout']}" if shared.get("cutout") else "") + ", as in retraining")
    if config.search.strategy == "halving":
        rungs, eta = stages.halving_rungs(config)
        fidelity = (f"Successive halving: rung 0 trained random networks for {rungs[0]} epoch(s), each next rung the "
                    f"best 1/{eta:g} of the one below for {', then '.join(map(str, rungs[1:]))} epochs (from scratch), "
                    f"with the corners at every rung; every trial used {images} training images with {augmentation}, "
                    "and was scored on the validation split; the arm keeps its best network at the top rung.")
    else:
        fidelity = (f"Every trial trained {config.search.epochs} epoch(s) on {images} training images with "
                    f"{augmentation}, and was scored on the validation split; the arm keeps its best-scoring network "
                    "(NNI trial or corner).")
    lines = ["## What each search saw", "", fidelity, "", "| search | seeds: tuner / trials | NNI trials (succeeded/run) "
             "| corners: validation accuracy | trial epochs | minutes | kept |", "|---|---|---|---|---|---|---|"]
    for arm, info in arms.items():
        for k in range(len(info["runs"])):
            lines.append(_search_row(config, stages.run_name(arm, k), info["searches"].get(k)))
    return lines + [""]


def _trial_seeds(arms: dict[str, dict[str, Any]]) -> str:
    """What the repeated searches' trials were seeded with, as they ran (``trial_seed`` of each search)."""
    seeds = {k: s.get("trial_seed") for info in arms.values() for k, s in info["searches"].items()
             if s.get("trial_seed") is not None}
    if len(set(seeds.values())) > 1:
        return "a repeat's trials also add its index to their seed, so each search sees its own weights, batches and split"
    if seeds:
        return (f"their trials all ran with seed {next(iter(seeds.values()))}, so the searches differ in the networks "
                "their tuners proposed only: the same network scores the same in every search")
    return "no multi-trial search recorded its trials' seed"


def _search_row(config: StudyConfig, arm: str, s: dict[str, Any] | None) -> str:
    """One row of "What each search saw"."""
    if not s:
        return f"| {arm} | - | - | - | - | - | not searched (failed or not run) |"
    if s.get("architectures") == 1:
        return f"| {arm} | - | none: the space holds 1 network | - | 0 | 0.0 | that network |"
    seeds = f"{s.get('tuner_seed', s.get('seed', '-'))} / {s.get('trial_seed', '-')}"
    trials = s.get("trials", [])
    corners = ", ".join(f"{c['arm']} {c['val_acc']:.4f}" for c in s.get("corners", []) if c.get("val_acc") is not None)
    if s.get("corners_unreachable"):
        corners += (", " if corners else "") + "not in this space: " + ", ".join(s["corners_unreachable"])
    ran = ("one-shot" if config.search.one_shot else
           f"{sum(t['status'] == 'SUCCEEDED' for t in trials)}/{len(trials)}")
    best = s.get("best_trial", "-")
    kept = f"{best} ({s['best_val_acc']:.4f})" if s.get("best_val_acc") is not None else str(best)
    return (f"| {arm} | {seeds} | {ran} | {corners or '-'} | {s.get('trial_epochs', '-')} | "
            f"{s.get('seconds', 0) / 60:.1f} | {kept} |")


def _command(study_dir: Path, command: str) -> str:
    """The command that ran the study's stages (kept from the last run that ran any), not a report rebuild."""
    record = study_dir / "command.txt"
    return record.read_text().strip() if record.is_file() else command


def _code_version(study_dir: Path) -> str:
    """nni-bio's version, and the git commit the study ran from when it was recorded."""
    from importlib.metadata import version

    record = _read(study_dir / "study.json") or {}
    commit = record.get("commit")
    return f"nni-bio {version('nni-bio')}" + (f", commit {commit}" if commit else "")


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _gpus() -> str:
    try:
        import torch

        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    except Exception:  # noqa: BLE001
        return ""


__all__ = ["collect", "landscape_section", "proxy_section", "search_budgets", "verdict", "write_report"]
