"""Adversarial robustness of rule-trained networks, without the reference code's evaluation bugs.

What is measured (``learning-rules.md`` §8; defects #7 and #8 of ``paper-digest.md``):

- **Pixel-space budgets.** Images stay in [0, 1] (``get_dataset(..., normalize=False)``) and the
  data set's mean/std normalisation is the first module of the attacked model
  (:class:`Normalize`), so ``eps = 8/255`` means 8 grey levels and clamping to [0, 1] is right.
- **Two gradient views** for white-box attacks (FGSM, PGD): ``rule`` takes the input gradient
  through the network's own backward (B instead of W^T: the paper's convention, partly gradient
  masking); ``bp`` attacks an exact-backprop view of the same weights
  (:func:`nni_bio.swap_rule` on a deep copy: the forward pass, hence clean accuracy, is identical).
- **Black-box attacks**: Square (score-based, forward passes only) and a transfer attack (PGD on
  a BP view of another trained network, the *surrogate*), which no gradient masking can hide from.
- **Separate meters.** Every row counts clean and adversarial correct predictions in two meters
  over the same, stated number of test images (the first ``num_images`` of the test split).

FGSM, PGD and Square come from torchattacks 3.5.1 (their classes only call the model's forward
and ``torch.autograd.grad``, so a rule's custom backward is used as is). PGD's random start and
Square's draws are seeded per batch: a fixed model, seed and image set give the same numbers.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nni_bio.core.error_bus import main_output
from nni_bio.core.errors import NniBioError
from nni_bio.core.swap import swap_rule

WHITE_BOX = ("fgsm", "pgd")
BLACK_BOX = ("square", "transfer")
ATTACKS = WHITE_BOX + BLACK_BOX
GRADIENTS = ("rule", "bp")
ATTACK_LABELS = {"fgsm": "FGSM", "pgd": "PGD", "square": "Square", "transfer": "Transfer"}
GRADIENT_LABELS = {"rule": "rule (own backward)", "bp": "bp (exact-gradient view)",
                   "none": "none (black-box)", "surrogate-bp": "surrogate, bp view"}


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; identity when ``mean`` is None (data left in [0, 1])."""

    def __init__(self, mean: Sequence[float] | None, std: Sequence[float] | None):
        super().__init__()
        self.active = mean is not None
        shape = (-1, 1, 1)
        self.register_buffer("mean", torch.tensor(mean if mean is not None else [0.0]).view(shape))
        self.register_buffer("std", torch.tensor(std if std is not None else [1.0]).view(shape))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std if self.active else x


class Logits(nn.Module):
    """The main logits of a network that may return ``(logits, aux)``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return main_output(self.net(x))


def attack_view(net: nn.Module, dataset: str, gradient: str = "rule") -> nn.Module:
    """``Normalize -> net`` in eval mode, taking [0, 1] images.

    ``gradient="bp"`` uses a deep copy switched to exact backprop (same weights, same forward);
    ``"rule"`` uses ``net`` itself (its rules' backward).
    """
    from nni_bio.data import dataset_info

    if gradient not in GRADIENTS:
        raise NniBioError(f"unknown gradient view {gradient!r}: use one of {', '.join(GRADIENTS)}")
    info = dataset_info(dataset)
    model = swap_rule(copy.deepcopy(net), "backprop") if gradient == "bp" else net
    device = next(net.parameters()).device
    return nn.Sequential(Normalize(info.mean, info.std), Logits(model)).to(device).eval()


def input_gradient(view: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """dL/dx of the cross-entropy through ``view``'s backward (what a white-box attacker sees)."""
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(F.cross_entropy(view(x), y), x)[0]


def parse_eps(text: str) -> list[float]:
    """``"0,2/255,8/255,0.1"`` -> floats (fractions allowed)."""
    try:
        values = [float(Fraction(part.strip())) for part in text.split(",") if part.strip()]
    except (ValueError, ZeroDivisionError) as exc:
        raise NniBioError(f"cannot read eps list {text!r}: use numbers or fractions like 8/255, "
                          f"comma separated") from exc
    if any(v < 0 or v > 1 for v in values):
        raise NniBioError(f"eps values must be in [0, 1] (pixel units), got {values}")
    return values


def eps_label(eps: float) -> str:
    """``0.1`` for short decimals, ``8/255`` for other whole numbers of grey levels, else ``%g``."""
    short, k = f"{eps:g}", eps * 255
    if len(short) <= 4 or abs(k - round(k)) > 1e-6:
        return short
    return f"{round(k)}/255"


@dataclass
class Meter:
    """Correct predictions over images seen."""

    correct: int = 0
    total: int = 0

    def update(self, logits: Tensor, y: Tensor) -> None:
        self.correct += int((logits.argmax(1) == y).sum())
        self.total += len(y)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else math.nan


@dataclass
class AttackSettings:
    """What to run. ``pgd_alpha`` is relative: step = pgd_alpha * eps (2.5 * eps / steps by default)."""

    attacks: Sequence[str] = ("fgsm", "pgd", "square")
    eps: Sequence[float] = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255)
    gradients: Sequence[str] = GRADIENTS
    num_images: int = 1000
    batch_size: int = 250
    pgd_steps: int = 10
    pgd_alpha: float | None = None
    square_queries: int = 200
    seed: int = 0

    def alpha(self, eps: float) -> float:
        return eps * (self.pgd_alpha if self.pgd_alpha is not None else 2.5 / max(self.pgd_steps, 1))


def make_attack(name: str, model: nn.Module, eps: float,
                settings: AttackSettings) -> Callable[[Tensor, Tensor], Tensor]:
    """A torchattacks attack on ``model`` ([0, 1] inputs) as ``(images, labels) -> adversarial images``."""
    try:
        import torchattacks
    except ImportError as exc:
        raise NniBioError("the attacks need torchattacks: .venv/bin/pip install --no-deps torchattacks==3.5.1 "
                          "(scripts/setup.sh installs it)") from exc

    if name == "fgsm":
        return torchattacks.FGSM(model, eps=eps)
    if name in ("pgd", "transfer"):
        return torchattacks.PGD(model, eps=eps, alpha=settings.alpha(eps), steps=settings.pgd_steps, random_start=True)
    if name == "square":
        if eps == 0:
            return lambda x, y: x.clone()
        return torchattacks.Square(model, norm="Linf", eps=eps, n_queries=settings.square_queries, n_restarts=1,
                                   seed=settings.seed, loss="margin", resc_schedule=True)
    raise NniBioError(f"unknown attack {name!r}: use one of {', '.join(ATTACKS)}")


def load_test_images(dataset: str, num_images: int, data_dir: str | None = None,
                     split_seed: int = 0) -> tuple[Tensor, Tensor]:
    """The first ``num_images`` test images in [0, 1] (no normalisation, no augmentation) and labels."""
    from nni_bio.data import get_dataset

    data = get_dataset(dataset, "test", data_dir, seed=split_seed, normalize=False, augment=False)
    n = min(num_images, len(data))
    items = [data[i] for i in range(n)]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


def attack_settings(attack: str, settings: AttackSettings, surrogate: str | None = None) -> dict[str, Any]:
    """What, besides eps, gradient view and images, shapes ``attack``'s numbers: rows that differ here
    are different experiments (kept apart in ``attack.json`` and in separate lines of ``attack.md``).

    FGSM is deterministic; PGD (random start) and Square draw per batch from ``seed + batch index``.
    """
    if attack == "fgsm":
        return {}
    out: dict[str, Any] = {"seed": settings.seed, "batch_size": settings.batch_size}
    if attack in ("pgd", "transfer"):
        out.update(steps=settings.pgd_steps, alpha_per_eps=settings.alpha(1.0))
    if attack == "square":
        out["queries"] = settings.square_queries
    if attack == "transfer":
        out["surrogate"] = surrogate
    return out


def _row(attack: str, gradient: str, eps: float, clean: Meter, adv: Meter, max_delta: float,
         settings: AttackSettings) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if attack in ("pgd", "transfer"):
        params = {"steps": settings.pgd_steps, "alpha": settings.alpha(eps), "random_start": True}
    elif attack == "square":
        params = {"queries": settings.square_queries, "p_init": 0.8, "loss": "margin"}
    return {"attack": attack, "gradient": gradient, "eps": eps, "eps_label": eps_label(eps),
            "clean_acc": clean.accuracy, "adv_acc": adv.accuracy, "clean_correct": clean.correct,
            "adv_correct": adv.correct, "num_images": clean.total, "max_perturbation": max_delta, "params": params,
            "settings": attack_settings(attack, settings)}


def run_attack(target: nn.Module, attack: str, eps: float, x: Tensor, y: Tensor, settings: AttackSettings, *,
               gradient: str, source: nn.Module | None = None,
               correct_out: list[Tensor] | None = None) -> dict[str, Any]:
    """One row: ``attack`` at ``eps`` against ``target`` (an :func:`attack_view`).

    The adversarial images are computed on ``source`` (default: ``target``; a surrogate's view
    for the transfer attack) and both meters count on ``target``. PGD's random start and
    Square's draws use seed ``settings.seed + batch index``. ``correct_out`` receives the
    per-image correctness under attack (a bool tensor).
    """
    source = target if source is None else source
    device = next(target.parameters()).device
    atk = make_attack(attack, source, eps, settings)
    clean, adv, max_delta, masks = Meter(), Meter(), 0.0, []
    for b, start in enumerate(range(0, len(y), settings.batch_size)):
        xb, yb = x[start:start + settings.batch_size].to(device), y[start:start + settings.batch_size].to(device)
        with torch.no_grad():
            clean.update(target(xb), yb)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed + b)
            x_adv = atk(xb, yb).detach()
        delta = float((x_adv - xb).abs().max()) if len(yb) else 0.0
        if delta > eps + 1e-5 or x_adv.min() < 0 or x_adv.max() > 1:
            raise NniBioError(f"{attack} at eps={eps} produced a perturbation of {delta} or left [0, 1]")
        max_delta = max(max_delta, delta)
        with torch.no_grad():
            logits = target(x_adv)
        adv.update(logits, yb)
        masks.append((logits.argmax(1) == yb).cpu())
    row = _row(attack, gradient, eps, clean, adv, max_delta, settings)
    if correct_out is not None:
        correct_out.append(torch.cat(masks) if masks else torch.zeros(0, dtype=torch.bool))
    return row


def evaluate_robustness(net: nn.Module, dataset: str, x: Tensor, y: Tensor, settings: AttackSettings, *,
                        surrogate: nn.Module | None = None, surrogate_name: str | None = None,
                        log: Callable[[str], None] | None = None) -> list[dict]:
    """All rows: white-box attacks once per gradient view, black-box attacks once.

    Each row has ``clean_acc`` and ``adv_acc`` (the attack at exactly that eps, counted by
    separate meters) and ``robust_acc``: the worst case over the eps ladder, where an image
    counts as robust at eps only if it was classified correctly clean and under this attack at
    every budget <= eps (a smaller perturbation is inside the larger ball). ``adv_acc`` can rise
    with eps when the attack's gradient is poor (a rule's own backward); ``robust_acc`` cannot.

    Args:
        net: the trained network (normalised inputs, as trained); it is not modified.
        x, y: test images in [0, 1] and labels.
        surrogate: a network (same data set) whose BP view crafts the transfer attack's images.
        surrogate_name: how the transfer rows name the surrogate (its run folder), in ``settings``.
    """
    unknown = [a for a in settings.attacks if a not in ATTACKS]
    if unknown:
        raise NniBioError(f"unknown attack(s) {unknown}: use {', '.join(ATTACKS)}")
    if "transfer" in settings.attacks and surrogate is None:
        raise NniBioError("the transfer attack needs a surrogate network (--surrogate RUN_DIR)")
    views = {g: attack_view(net, dataset, g) for g in settings.gradients}
    rows = []
    plan: list[tuple[str, str, nn.Module, nn.Module | None]] = []
    for attack in settings.attacks:
        if attack in WHITE_BOX:
            plan += [(attack, g, views[g], None) for g in settings.gradients]
        elif attack == "square":
            plan.append((attack, "none", views.get("rule") or attack_view(net, dataset, "rule"), None))
        else:
            target = views.get("rule") or attack_view(net, dataset, "rule")
            plan.append((attack, "surrogate-bp", target, attack_view(surrogate, dataset, "bp")))
    for attack, gradient, target, source in plan:
        device = next(target.parameters()).device
        with torch.no_grad():
            robust = torch.cat([target(x[i:i + settings.batch_size].to(device)).argmax(1).cpu()
                                for i in range(0, len(y), settings.batch_size)]) == y
        for eps in sorted(settings.eps):
            correct: list[Tensor] = []
            row = run_attack(target, attack, eps, x, y, settings, gradient=gradient, source=source, correct_out=correct)
            if attack == "transfer":
                row["settings"] = attack_settings(attack, settings, surrogate_name)
            robust &= correct[0]
            row["robust_acc"] = int(robust.sum()) / len(y) if len(y) else math.nan
            rows.append(row)
            if log is not None:
                log(f"{ATTACK_LABELS[attack]:<8} {gradient:<12} eps {row['eps_label']:>7}: "
                    f"clean {row['clean_acc']:.4f} "
                    f"adversarial {row['adv_acc']:.4f} ({row['num_images']} images)")
    return rows


def accuracy_cell(row: dict[str, Any]) -> str:
    """Adversarial accuracy; the worst case over smaller budgets follows in parentheses when lower."""
    text = f"{row['adv_acc']:.4f}"
    robust = row.get("robust_acc")
    return text + (f" ({robust:.4f})" if robust is not None and robust < row["adv_acc"] - 1e-9 else "")


def _settings_key(row: dict[str, Any]) -> str:
    return json.dumps(row.get("settings", {}), sort_keys=True)


def settings_label(settings: dict[str, Any]) -> str:
    """``seed 0, batch 250, step 0.25 eps, surrogate runs/x`` (steps and queries are in the attack name)."""
    parts = []
    if "seed" in settings:
        parts.append(f"seed {settings['seed']}")
    if "batch_size" in settings:
        parts.append(f"batch {settings['batch_size']}")
    if "alpha_per_eps" in settings:
        parts.append(f"step {settings['alpha_per_eps']:.3g} eps")
    if settings.get("surrogate"):
        parts.append(f"surrogate {settings['surrogate']}")
    return ", ".join(parts) or "-"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per attack, gradient view, number of images and attack settings (seed, steps,
    queries, ...: rows of different experiments are never mixed in a line): clean accuracy, then
    adversarial accuracy per eps (with the worst case over smaller budgets in parentheses where it
    is lower)."""
    eps_values = sorted({r["eps"] for r in rows})
    groups: dict[tuple[str, str, int, str], dict[float, dict]] = {}
    for r in rows:
        groups.setdefault((r["attack"], r["gradient"], r["num_images"], _settings_key(r)), {})[r["eps"]] = r
    header = ("| attack | gradient | images | clean | " + " | ".join(f"eps {eps_label(e)}" for e in eps_values)
              + " | settings |")
    lines = [header, "|" + "---|" * (5 + len(eps_values))]
    for (attack, gradient, _, _), by_eps in groups.items():
        any_row = next(iter(by_eps.values()))
        cleans = {round(r["clean_acc"], 6) for r in by_eps.values()}
        clean = f"{any_row['clean_acc']:.4f}" if len(cleans) == 1 else "/".join(f"{c:.4f}" for c in sorted(cleans))
        name = ATTACK_LABELS[attack] + (f"-{any_row['params']['steps']}" if "steps" in any_row["params"] else "")
        if attack == "square":
            name += f" ({any_row['params']['queries']} q)"
        cells = [accuracy_cell(by_eps[e]) if e in by_eps else "" for e in eps_values]
        lines.append(f"| {name} | {GRADIENT_LABELS.get(gradient, gradient)} | {any_row['num_images']} | {clean} | "
                     + " | ".join(cells) + f" | {settings_label(any_row.get('settings', {}))} |")
    return "\n".join(lines)


def merge_rows(old: Sequence[dict], new: Sequence[dict]) -> list[dict]:
    """``new`` rows replace old ones with the same (attack, gradient, eps, images, settings); others are kept."""
    key = lambda r: (r["attack"], r["gradient"], r["eps"], r["num_images"], _settings_key(r))  # noqa: E731
    replaced = {key(r) for r in new}
    return [r for r in old if key(r) not in replaced] + list(new)


def write_report(folder: Path, header: dict[str, Any], rows: list[dict]) -> tuple[Path, Path]:
    """``attack.json`` (merged with an earlier one made on the same images) and ``attack.md``."""
    from nni_bio.core.safe_json import write_json

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "attack.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if all(old.get(k) == header.get(k) for k in ("dataset", "weights")):  # the same network and data
            legacy = [r if "settings" in r else _with_legacy_settings(r, old) for r in old.get("rows", [])]
            rows = merge_rows(legacy, rows)
    write_json(path, {**header, "rows": rows})
    md = folder / "attack.md"
    images = sorted({r["num_images"] for r in rows})
    md.write_text(f"# Robustness: {header.get('description', '')} on {header['dataset']}\n\n"
                  f"The first {' or '.join(map(str, images))} test images of the test split (column `images`), L-inf "
                  f"budgets in pixel units (images in [0, 1], normalisation inside the model). Weights: "
                  f"`{header['weights']}`. Each line is one experiment: attack, gradient view, images and settings "
                  f"(PGD's and Square's random draws come from `seed` + batch index); runs with other settings get "
                  f"lines of their own. Clean and adversarial accuracy are counted by separate meters on the "
                  f"same images; the `bp` view attacks exact gradients of the same weights (same forward), the "
                  f"`rule` view the network's own backward. A value in parentheses is the worst case over the "
                  f"smaller budgets (an image broken at a smaller eps counts as broken), shown where it is lower "
                  f"than the attack at that eps alone.\n\n{markdown_table(rows)}\n")
    return path, md


def _with_legacy_settings(row: dict[str, Any], header: dict[str, Any]) -> dict[str, Any]:
    """A row of an ``attack.json`` written before rows carried their settings (from its header and params)."""
    params = row.get("params", {})
    settings = {} if row["attack"] == "fgsm" else {"seed": header.get("seed"), **{
        k: params[k] for k in ("steps", "queries") if k in params}}
    if row["attack"] == "transfer":
        settings["surrogate"] = header.get("surrogate")
    return {**row, "settings": settings}


__all__ = ["ATTACKS", "AttackSettings", "Meter", "Normalize", "accuracy_cell", "attack_settings", "attack_view",
           "eps_label", "evaluate_robustness", "input_gradient", "load_test_images", "markdown_table", "parse_eps",
           "run_attack", "settings_label", "write_report"]
