"""Compare trained runs: a Markdown table and a plot of accuracy against the attack budget.

Reads each run folder's ``result.json`` (``nni-bio train``) and ``attack.json`` (``nni-bio
attack``). The plot has one panel per attack; one colour per run, one line style per gradient
view (solid: exact-gradient ``bp`` view, dashed: the rule's own backward, dotted: black-box).
matplotlib runs with the Agg backend (no display, no font download).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nni_bio.core.errors import NniBioError
from nni_bio.evaluate.robustness import ATTACK_LABELS, GRADIENT_LABELS, accuracy_cell, eps_label, settings_label

LINESTYLES = {"bp": ("-", "o"), "rule": ("--", "s"), "none": (":", "^"), "surrogate-bp": ("-.", "D")}


@dataclass
class Run:
    folder: Path
    name: str
    result: dict[str, Any] = field(default_factory=dict)
    attack: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self.attack.get("rows", []))

    @property
    def label(self) -> str:
        description = self.result.get("description") or self.attack.get("description") or ""
        return f"{self.name} ({description})" if description and description not in self.name else self.name


def load_runs(folders: list[str | Path]) -> list[Run]:
    """The runs of ``folders``; each needs ``result.json`` or ``attack.json``."""
    runs = []
    for folder in map(Path, folders):
        result = _read(folder / "result.json")
        attack = _read(folder / "attack.json")
        if not result and not attack:
            raise NniBioError(f"{folder} has neither result.json nor attack.json (run nni-bio train / attack first)")
        runs.append(Run(folder, folder.resolve().name, result, attack))
    return runs


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))


def _network_cell(run: Run) -> str:
    """The network's description, with the DARTS layer preset (``bio``/``reference``) when it has one."""
    description = run.result.get("description", run.attack.get("description", ""))
    preset = run.result.get("preset")
    return f"{description} (preset {preset})" if preset else description


def _data_cell(run: Run) -> str:
    """The data set, with the splits when they are not the defaults (train+val, NB201's test half)."""
    r = run.result
    notes = [s for s in (r.get("train_split") if r.get("train_split") not in (None, "train") else None,
                         f"test: {r['test_split']}" if r.get("test_split") not in (None, "full") else None) if s]
    dataset = r.get("dataset", run.attack.get("dataset", ""))
    return f"{dataset} ({', '.join(notes)})" if notes else dataset


def training_table(runs: list[Run]) -> str:
    """One row per run. The preset of a DARTS genotype network is named in the network column; a run
    trained on train+val has no validation set, which its best-val cell says."""
    lines = ["| run | network | data set | final-epoch test acc | best val acc (epoch) | epochs | status |",
             "|---|---|---|---|---|---|---|"]
    for run in runs:
        r = run.result
        final, best = r.get("final", {}), r.get("best_val") or {}
        best_text = (f"{best['val_acc']:.4f} ({best['epoch']})" if best else
                     "none (train+val)" if r.get("train_split") == "train+val" else "")
        epochs = r.get("setup", {}).get("config", {}).get("epochs", "")
        lines.append(f"| {run.name} | {_network_cell(run)} | {_data_cell(run)} | {_fmt(final.get('test_acc'))} | "
                     f"{best_text} | {epochs} | {r.get('status', 'no result.json')} |")
    return "\n".join(lines)


def _experiments(run: Run, attack: str) -> dict[tuple[str, int, str], dict[float, dict]]:
    """``attack``'s rows of ``run`` by (gradient view, images, settings), then eps: rows of different
    experiments (another seed, PGD step count, Square query budget...) never share a line."""
    groups: dict[tuple[str, int, str], dict[float, dict]] = {}
    for row in run.rows:
        if row["attack"] == attack:
            key = (row["gradient"], row["num_images"], json.dumps(row.get("settings", {}), sort_keys=True))
            groups.setdefault(key, {})[row["eps"]] = row
    return groups


def attack_tables(runs: list[Run]) -> str:
    """One table per attack: rows (run, gradient view), columns clean accuracy then each eps."""
    attacks = [a for a in ATTACK_LABELS if any(row["attack"] == a for run in runs for row in run.rows)]
    parts = []
    for attack in attacks:
        eps_values = sorted({row["eps"] for run in runs for row in run.rows if row["attack"] == attack})
        lines = [f"### {ATTACK_LABELS[attack]}", "",
                 "| run | gradient | images | clean | " + " | ".join(f"eps {eps_label(e)}" for e in eps_values)
                 + " | settings |", "|" + "---|" * (5 + len(eps_values))]
        for run in runs:
            for (gradient, _, _), by_eps in _experiments(run, attack).items():
                first = next(iter(by_eps.values()))
                cells = [accuracy_cell(by_eps[e]) if e in by_eps else "" for e in eps_values]
                lines.append(f"| {run.name} | {GRADIENT_LABELS.get(gradient, gradient)} | {first['num_images']} | "
                             f"{_fmt(first['clean_acc'])} | " + " | ".join(cells)
                             + f" | {settings_label(first.get('settings', {}))} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def plot(runs: list[Run], path: Path, title: str | None = None) -> Path:
    """Accuracy vs eps (in grey levels k/255 when every budget is one), one panel per attack; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    attacks = [a for a in ATTACK_LABELS if any(row["attack"] == a for run in runs for row in run.rows)]
    if not attacks:
        raise NniBioError("no attack results to plot: run nni-bio attack on the runs first")
    fig, axes = plt.subplots(1, len(attacks), figsize=(4.6 * len(attacks) + 0.4, 4.4), sharey=True, squeeze=False)
    colors = plt.get_cmap("tab10").colors
    all_eps = [row["eps"] for run in runs for row in run.rows]
    grey_levels = all(abs(e * 255 - round(e * 255)) < 1e-6 for e in all_eps)  # 8/255-style budgets
    scale, xlabel = (255, "L-inf budget eps (x 1/255 of the pixel range)") if grey_levels else \
        (1, "L-inf budget eps (pixels in [0, 1])")
    views_seen: list[str] = []
    for ax, attack in zip(axes[0], attacks):
        for i, run in enumerate(runs):
            for (gradient, _, _), by_eps in _experiments(run, attack).items():
                rows = sorted(by_eps.values(), key=lambda r: r["eps"])
                style, marker = LINESTYLES.get(gradient, ("-", "x"))
                ax.plot([r["eps"] * scale for r in rows], [r["adv_acc"] for r in rows], linestyle=style, marker=marker,
                        color=colors[i % len(colors)], linewidth=2, markersize=5)
                if gradient not in views_seen:
                    views_seen.append(gradient)
        images = sorted({row["num_images"] for run in runs for row in run.rows if row["attack"] == attack})
        ax.set_title(f"{ATTACK_LABELS[attack]}  ({'/'.join(map(str, images))} test images)")
        ax.set_xlabel(xlabel)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("accuracy under attack")
    run_handles = [Line2D([], [], color=colors[i % len(colors)], linewidth=3, label=run.label)
                   for i, run in enumerate(runs)]
    view_handles = [Line2D([], [], color="0.3", linestyle=LINESTYLES.get(v, ("-", "x"))[0],
                           marker=LINESTYLES.get(v, ("-", "x"))[1], label=GRADIENT_LABELS.get(v, v))
                    for v in views_seen]
    fig.legend(handles=run_handles + view_handles, loc="lower center", frameon=False, bbox_to_anchor=(0.5, 0.0),
               ncol=min(4, len(run_handles) + len(view_handles)))
    rows_needed = -(-(len(run_handles) + len(view_handles)) // 4)
    fig.suptitle(title or "Accuracy under attack vs budget (eps = 0: clean accuracy)", fontsize=13)
    fig.tight_layout(rect=(0, 0.06 * rows_needed + 0.02, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(folders: list[str | Path], output: str | Path, *,
                 title: str | None = None) -> tuple[Path, Path | None]:
    """``report.md`` (training and attack tables, the plot embedded) and ``report.png`` in ``output``."""
    runs = load_runs(folders)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    png = plot(runs, output / "report.png", title) if any(run.rows for run in runs) else None
    md = output / "report.md"
    body = [f"# {title or 'nni-bio report'}", "", "## Training", "", training_table(runs), ""]
    if png is not None:
        body += ["## Robustness", "", "Adversarial accuracy (clean accuracy in its own column, counted separately); "
                 "L-inf budgets in pixel units, normalisation inside the model. `bp` = attack on the exact-gradient "
                 "view of the same weights, `rule` = through the network's own backward. In parentheses: the worst "
                 "case over the smaller budgets, where it is lower than the attack at that budget alone.", "",
                 f"![accuracy vs eps]({png.name})", "", attack_tables(runs), ""]
    md.write_text("\n".join(body))
    return md, png


__all__ = ["Run", "attack_tables", "load_runs", "plot", "training_table", "write_report"]
