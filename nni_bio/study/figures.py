"""The study report's figures (PNG, matplotlib's Agg backend, no fonts or downloads).

- ``accuracy.png``: final-epoch test accuracy per arm, mean +- std over seeds, every seed a dot;
- ``robustness.png``: accuracy vs eps per attack and gradient view, one line per arm;
- ``architectures.png``: each arm's found architecture: a strip of its weight layers coloured by
  rule (sequential spaces), or its cells drawn as graphs with each edge's op and rule (DARTS, NB201);
- ``weights_per_rule.png``: trainable weights per rule in each arm's retrained network;
- ``learning_curves.png``: validation accuracy per retraining epoch, mean over seeds, one line per arm;
- ``landscape.png``: validation accuracy of every landscape network against its number of distinct rules;
- ``proxy.png``: the search's score of each checked candidate against its score after the final recipe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nni_bio.nas.candidates import EXACT_LOCAL_GRADIENT, INPUT_LAYER_KINDS

RULE_COLOURS = {"backprop": "#4d4d4d", "fa": "#1f77b4", "usf": "#ff7f0e", "frsf": "#2ca02c", "brsf": "#d62728",
                "kp": "#9467bd", "dfa": "#8c564b", "softhebb": "#e377c2", "other": "#cfcfcf", None: "#9e9e9e",
                EXACT_LOCAL_GRADIENT: "#e0e0e0"}
_EXTRA = ["#17becf", "#bcbd22", "#7f7f7f", "#aec7e8", "#ffbb78"]


def arm_colour(arm: str) -> str:
    """An arm named after a rule takes the rule's colour; ``mixed`` is black; others get spare colours."""
    return "#000000" if arm == "mixed" else colour(arm)


def colour(rule: str | None) -> str:
    if rule not in RULE_COLOURS:
        RULE_COLOURS[rule] = _EXTRA[len(RULE_COLOURS) % len(_EXTRA)]
    return RULE_COLOURS[rule]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_figure(arms: Mapping[str, Sequence[float]], path: Path, title: str) -> Path:
    plt = _pyplot()
    import numpy as np

    names = list(arms)
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(names) + 1.5), 3.6))
    for i, name in enumerate(names):
        values = np.asarray(arms[name], dtype=float)
        if values.size == 0:
            ax.text(i, 0, "failed", ha="center", va="bottom", rotation=90, fontsize=8)
            continue
        std = values.std(ddof=1) if values.size > 1 else 0.0
        ax.bar(i, values.mean(), yerr=std, capsize=4, color=arm_colour(name), edgecolor="black", linewidth=0.6)
        ax.scatter(np.full(values.size, i) + np.linspace(-0.15, 0.15, values.size), values, s=10, color="black",
                   zorder=3)
    finite = [v for vs in arms.values() for v in vs]
    if finite:  # zoom on the arms within 25 points of the best; an arm far below is labelled at the bottom
        top = max(finite)
        near = [v for v in finite if v >= top - 0.25]
        low = max(0.0, min(near) - 0.6 * (top - min(near) + 0.01) - 0.02)
        ax.set_ylim(low, min(1.0, top + 0.02))
        for i, name in enumerate(names):
            if arms[name] and float(np.mean(arms[name])) < low:
                ax.text(i, low, f"{100 * float(np.mean(arms[name])):.1f} %\n(below axis)", ha="center", va="bottom",
                        fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("final-epoch test accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def robustness_figure(curves: Mapping[tuple[str, str], Mapping[str, tuple[list[float], list[float], list[float]]]],
                      path: Path, title: str) -> Path:
    """``curves[(attack, gradient)][arm] = (eps, mean, std)``."""
    plt = _pyplot()

    panels = list(curves)
    cols = min(3, max(1, len(panels)))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, key in zip(axes.flat, panels):
        for arm, (eps, mean, std) in curves[key].items():
            ax.errorbar(eps, mean, yerr=std, marker="o", markersize=3, capsize=2, label=arm, color=arm_colour(arm),
                        linewidth=2.2 if arm == "mixed" else 1, linestyle="--" if arm == "backprop" else "-")
        ax.set_title(f"{key[0].upper()}, gradient: {key[1]}", fontsize=9)
        ax.set_xlabel("eps (L-inf, pixel units)")
        ax.set_ylabel("accuracy (worst case over eps <=)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(8, len(labels)), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cell_edges(genotype: Mapping[str, Any]) -> dict[str, list[tuple[int, int, str]]]:
    """Cells of a DARTS or NB201 genotype as ``{cell: [(source, target, candidate), ...]}``."""
    if genotype.get("space") == "darts":
        return {cell: [(int(src), 2 + i // 2, str(cand)) for i, (cand, src) in enumerate(genotype[cell])]
                for cell in ("normal", "reduce")}
    if genotype.get("space") == "nb201":
        edges = []
        for label, cand in genotype["sample"].items():
            src, dst = label.split("/")[-1].split("_")
            edges.append((int(src), int(dst), str(cand)))
        return {"cell": sorted(edges, key=lambda e: (e[1], e[0]))}
    return {}


def architecture_figure(arms: Mapping[str, Mapping[str, Any]], path: Path, title: str) -> Path:
    """``arms[arm] = {"genotype": ..., "layers": {layer: rule}}`` (layers in network order)."""
    plt = _pyplot()
    from matplotlib.patches import FancyArrowPatch, Patch

    from nni_bio.nas.candidates import parse_candidate

    names = list(arms)
    cells = {arm: _cell_edges(arms[arm]["genotype"]) for arm in names}
    used: set[str | None] = set()
    if any(cells.values()):
        ncell = max(len(c) for c in cells.values())
        fig, axes = plt.subplots(len(names), ncell, figsize=(5.2 * ncell, 2.4 * len(names) + 0.8), squeeze=False)
        for r, arm in enumerate(names):
            for c, (cell, edges) in enumerate(cells[arm].items()):
                ax = axes[r][c]
                targets = {e[1] for e in edges}
                nodes = sorted({n for e in edges for n in e[:2]})
                inputs = [n for n in nodes if n not in targets]
                inner = [n for n in nodes if n in targets]
                pos = {n: (0.0, (len(inputs) - 1) / 2 - i) for i, n in enumerate(inputs)}
                pos.update({n: (1.7 * (k + 1), 0.6 * (-1) ** k) for k, n in enumerate(inner)})
                for k, (src, dst, cand) in enumerate(edges):
                    op, rule = parse_candidate(cand)
                    used.add(rule)
                    rad = 0.12 * (1 if k % 2 else -1)
                    ax.annotate("", xy=pos[dst], xytext=pos[src], arrowprops=dict(
                        arrowstyle="-|>", color=colour(rule), lw=1.6, shrinkA=9, shrinkB=9,
                        connectionstyle=f"arc3,rad={rad}"))
                    (x0, y0), (x1, y1) = pos[src], pos[dst]
                    ax.text(x0 + 0.55 * (x1 - x0), y0 + 0.55 * (y1 - y0), op.replace("_", " "), fontsize=6,
                            ha="center", va="center", color=colour(rule),
                            bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))
                for n, (x, y) in pos.items():
                    ax.scatter([x], [y], s=220, color="#f0f0f0" if n in inputs else "white", edgecolor="black", zorder=3)
                    ax.text(x, y, str(n), ha="center", va="center", fontsize=7, zorder=4)
                xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
                ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
                ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
                ax.axis("off")
                ax.set_title(f"{arm}: {cell} cell" if cell != "cell" else f"{arm}: cell", fontsize=9)
            for c in range(len(cells[arm]), ncell):
                axes[r][c].axis("off")
    else:
        width = max(len(arms[arm]["layers"]) for arm in names) if names else 1
        fig, ax = plt.subplots(figsize=(max(6, 0.9 * width + 2), 0.42 * len(names) + 1.6))
        for r, arm in enumerate(names):
            for i, (layer, rule) in enumerate(arms[arm]["layers"].items()):
                used.add(rule)
                ax.add_patch(plt.Rectangle((i, -r - 0.4), 0.95, 0.8, color=colour(rule), ec="black", lw=0.4))
                sample = arms[arm]["genotype"].get("sample", {})
                candidate = str(sample.get(layer.split(".")[0], ""))
                # a rule-only choice names no op; a first layer on the exact local gradient is named by its op alone
                named_op = "@" in candidate or (rule == EXACT_LOCAL_GRADIENT and candidate not in ("", *INPUT_LAYER_KINDS))
                op = parse_candidate(candidate)[0] if named_op else ""
                ax.text(i + 0.47, -r, f"{layer}\n{op}" if op else layer, fontsize=5.5, ha="center", va="center",
                        color="white" if rule in ("backprop", "fa", "dfa", "kp", "brsf") else "black")
        ax.set_xlim(-0.1, width + 0.1)
        ax.set_ylim(-len(names) + 0.45, 0.55)
        ax.set_yticks([-r for r in range(len(names))], names, fontsize=8)
        ax.set_xticks([])
        for side in ("top", "right", "bottom", "left"):
            ax.spines[side].set_visible(False)
        ax.set_xlabel("weight layers, input to output (layer names inside)", fontsize=8)
    legend = [Patch(color=colour(rule), label=rule or "no rule (parameter-free op)") for rule in sorted(used, key=str)]
    fig.legend(handles=legend, loc="lower center", ncol=min(4, len(legend)), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * ((len(legend) + 3) // 4), 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def weights_figure(counts: Mapping[str, Mapping[str, int]], path: Path, title: str) -> Path:
    plt = _pyplot()

    names = list(counts)
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(names) + 2), 3.4))
    rules = sorted({r for c in counts.values() for r in c}, key=lambda r: (r == "other", r))
    bottom = [0.0] * len(names)
    for rule in rules:
        values = [counts[a].get(rule, 0) / 1000 for a in names]
        ax.bar(range(len(names)), values, bottom=bottom, color=colour(rule), label=rule, edgecolor="black", lw=0.4)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("trainable weights (thousands)")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["accuracy_figure", "architecture_figure", "robustness_figure", "weights_figure"]


def learning_curves_figure(curves: Mapping[str, Sequence[float]], path: Path, title: str) -> Path:
    """``curves``: arm -> mean validation accuracy per epoch (epoch 1 first)."""
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for arm, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, color=arm_colour(arm), label=arm)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("retraining epoch")
    ax.set_ylabel("validation accuracy (mean over seeds)")
    ax.legend(fontsize=7, ncol=2)
    return _save(plt, fig, ax, path, title)


def landscape_figure(rows: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path:
    """``rows``: ``{"rules", "one_rule", "val_acc"}``; one-rule networks drawn in their rule's colour and named."""
    plt = _pyplot()
    import numpy as np

    rng = np.random.default_rng(0)  # horizontal jitter only
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for r in rows:
        x = len(r["rules"]) + rng.uniform(-0.15, 0.15)
        if r.get("one_rule"):
            ax.scatter(x, r["val_acc"], s=36, color=colour(r["one_rule"]), edgecolor="black", zorder=3)
            ax.annotate(r["one_rule"], (x, r["val_acc"]), fontsize=7, xytext=(4, 2), textcoords="offset points")
        else:
            ax.scatter(x, r["val_acc"], s=12, color="#7f7f7f", alpha=0.7)
    ax.set_xticks(sorted({len(r["rules"]) for r in rows}))
    ax.set_xlabel("distinct learning rules in the network")
    ax.set_ylabel("final validation accuracy")
    return _save(plt, fig, ax, path, title)


def proxy_figure(rows: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path:
    """``rows``: ``{"id", "search_val_acc", "final_val_acc"}``; corners (one-rule networks) named."""
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(5, 3.8))
    for r in rows:
        corner = str(r["id"]).startswith("corner:")
        ax.scatter(r["search_val_acc"], r["final_val_acc"], s=30 if corner else 16, edgecolor="black",
                   color=colour(str(r["id"]).split(":", 1)[1]) if corner else "#7f7f7f", zorder=3)
        if corner:
            ax.annotate(str(r["id"]).split(":", 1)[1], (r["search_val_acc"], r["final_val_acc"]), fontsize=7,
                        xytext=(4, 2), textcoords="offset points")
    ax.set_xlabel("search score (validation accuracy, search fidelity)")
    ax.set_ylabel("validation accuracy, final recipe")
    return _save(plt, fig, ax, path, title)


def _save(plt: Any, fig: Any, ax: Any, path: Path, title: str) -> Path:
    """Title, grid, tight layout, PNG at 120 dpi; the figure is closed."""
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
