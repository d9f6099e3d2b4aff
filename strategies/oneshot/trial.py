"""A one-shot search as ONE NNI trial: the whole search runs inside the trial, which reports every
epoch, writes TensorBoard logs and the derived genotype, and reports the derived architecture.

``nnictl`` runs it as the ``trialCommand`` of a one-trial experiment (``examples/digits-darts.yml``;
the experiment's search space is the trivial ``{"strategy": {"_type": "choice", "_value": ["darts"]}}``
with ``maxTrialNumber: 1``)::

    python3 -m nni_bio.strategies.oneshot.trial --space tiny --dataset digits --epochs 10

The trial takes the strategy (and any other hyperparameter the tuner sends, e.g. ``arch_lr``) from
its NNI parameters; ``--strategy`` on the command line must agree with it. Outside NNI, name it::

    python -m nni_bio.strategies.oneshot.trial --strategy egnas --space tiny --dataset digits --epochs 10 --output runs/egnas

Reported per search epoch (intermediate results): ``default`` = ``supernet_val_acc``, the validation
accuracy of the **supernet** as the strategy evaluates it (the softmax(alpha) mixture of every
candidate for darts/darts2/egnas, its noise-free softmax for gumbel, the controller's greedy path
for enas): a measure of the search, not of any one architecture. Also ``derived_val_acc``: the
current derived architecture computed with the supernet's shared weights (BatchNorm re-estimated,
no retraining), losses and strategy measurements.

After the search the trial **retrains the derived architecture** from scratch for
``--retrain-epochs`` epochs (default: 5 for the tiny space on digits, where it takes seconds, 0
elsewhere; see :func:`~nni_bio.strategies.oneshot.retrain_derived`) and reports as the final
``default`` the number a user expects from a search, the derived architecture's validation accuracy:

* ``retrained_val_acc`` after that retraining (``retrain_epochs`` says how long), or without
  retraining
* ``derived_val_acc`` (shared weights), or where that is not measured (``--set eval_derived=false``)
* ``supernet_val_acc``.

``default_metric`` names which one ``default`` is. The final result always keeps
``supernet_val_acc`` (last epoch), ``best_supernet_val_acc`` and ``best_supernet_epoch`` under those
names, plus ``strategy`` and ``sample`` (the derived architecture as a JSON string; NNI's web UI
shows non-numeric metric keys as categorical values). Files in the output folder
(``$NNI_OUTPUT_DIR``): ``genotype.json`` (rewritten every epoch), ``result.json``, ``tensorboard/``,
``checkpoint.pt``.

**Checkpoints and resume.** After every search epoch the trial writes ``checkpoint.pt`` atomically
(everything the search needs to continue exactly, see :mod:`nni_bio.strategies.oneshot`) into its
output folder, or into ``--checkpoint-dir`` (under NNI: a subfolder ``EXPERIMENT-TRIAL`` of it, for
storage shared between machines). ``--resume`` continues from it (a fresh start when there is none)
with the same per-epoch numbers and derived architecture as an uninterrupted search::

    python -m nni_bio.strategies.oneshot.trial --strategy darts --space tiny --dataset digits --epochs 50 --output runs/darts --resume

Under ``nnictl`` nothing else is needed: ``nnictl resume ID`` relaunches an interrupted trial with
its own trial id and output folder (NNI 3.0 does so for every trial that was running or waiting
when the experiment stopped), so the trial finds its checkpoint there; the shipped one-shot configs
pass ``--resume``, and a trial finding a checkpoint written by itself (same experiment and trial id)
continues even without it. The relaunched trial does not report the restored epochs again (NNI
kept them); a search resumed into another output folder reports and logs them first. Without
``--resume``, a checkpoint of another run in the folder is moved to ``checkpoint.previous.pt`` and a
new search starts.

**On a GPU.** ``--amp bf16`` (autocast) or ``--amp fp16`` (autocast, a GradScaler on the weight step,
scaled architecture gradients), ``--channels-last`` (supernet and batches in channels-last memory
format) and ``--partial-channels K`` (PC-DARTS' partial-channel edges, mixing the candidates of each
DARTS cell edge on 1/K of its channels: about K times less memory for the op x rule supernet, as
EG-NAS runs it) apply to every strategy; ``--partial-channels`` needs the DARTS space and a mixture
strategy (darts, darts2, gumbel, egnas). ``--edge-normalization`` adds PC-DARTS' other half, usually
together with it (but independent of K): a learned architecture weight beta per incoming edge of
every cell node, the node summing ``softmax(beta)_j`` times its edges and the derivation ranking
inputs by ``softmax(beta)_j`` times their best op weight; same spaces and strategies::

    python -m nni_bio.strategies.oneshot.trial --strategy egnas --space darts --dataset cifar10 --epochs 50 \
        --device cuda --amp bf16 --channels-last --partial-channels 4 --edge-normalization
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

from nni_bio.core.errors import NniBioError
from nni_bio.train.trial_runtime import TrialReporter, run_as_trial, trial_output
#: command-line options passed to run_oneshot when given (name -> type)
_HPARAM_FLAGS = {
    "batch_size": int, "lr": float, "lr_min": float, "momentum": float, "weight_decay": float,
    "grad_clip": float, "train_portion": float, "train_limit": int, "arch_lr": float, "arch_gradient": str,
    "warmup_epochs": int, "partial_channels": int,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m nni_bio.strategies.oneshot.trial", description=__doc__.split("\n\n")[0])
    p.add_argument("--strategy", default=None, help="darts, darts2, gumbel, enas, egnas (default: NNI parameter)")
    p.add_argument("--space", required=True, help="search space name (tiny, darts, ...)")
    p.add_argument("--space-args", default="{}", help="JSON object of extra space constructor arguments")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=None, help="where user data sets live (default: $NNI_BIO_DATA)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--retrain-epochs", type=int, default=None,
                   help="after the search, train the derived architecture from scratch for N epochs and report its "
                   "validation accuracy as the final default metric (default: 5 for the tiny space on digits, "
                   "0 elsewhere; 0: no retraining)")
    for name, kind in _HPARAM_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    p.add_argument("--amp", default=None, choices=["none", "bf16", "fp16"],
                   help="mixed precision: bf16 (autocast) or fp16 (autocast and a GradScaler); default none")
    p.add_argument("--channels-last", action="store_true", default=None,
                   help="supernet and batches in channels-last memory format (GPUs with tensor cores)")
    p.add_argument("--compile", nargs="?", const="inductor", default=None, choices=["none", "inductor", "aot_eager"],
                   help="torch.compile the supernet's forward and backward (--compile alone: inductor, or aot_eager "
                   "where inductor cannot build); not for enas, whose path changes every step")
    p.add_argument("--edge-normalization", action="store_true", default=None,
                   help="PC-DARTS' edge normalization: a learned architecture weight per incoming edge of every cell "
                   "node (spaces with cells, e.g. darts; strategies darts, darts2, gumbel, egnas)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a further strategy argument (VALUE read as JSON if it parses), e.g. --set population_size=20 "
                   "--set temperature=[1.0,0.5]; repeatable")
    p.add_argument("--hparams", default="{}", help="the same as one JSON object")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default); 1 is fastest "
                   "for the tiny spaces on a busy machine")
    p.add_argument("--output", default=None, help="output folder (default: $NNI_OUTPUT_DIR or runs/oneshot)")
    p.add_argument("--resume", action="store_true", help="continue the search from its checkpoint (a fresh start "
                   "when there is none); the settings must be those of the interrupted search")
    p.add_argument("--checkpoint-dir", default=None, help="where checkpoint.pt goes (default: the output folder; "
                   "under NNI a subfolder EXPERIMENT-TRIAL of this folder)")
    return p.parse_args(argv)


def nni_parameters() -> dict[str, Any]:
    """The trial's NNI parameters (``{}`` outside NNI), with NAS-format choices unwrapped."""
    import nni

    from nni_bio.nas.candidates import unwrap_choice

    from nni_bio.nas import _compat

    params = nni.get_next_parameter() or {}
    _compat.check_parameters_bound()
    return {k: unwrap_choice(v) for k, v in params.items()}


def resolve(args: argparse.Namespace, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Strategy name and hyperparameters from the command line and the NNI parameters."""
    params = dict(params)
    strategy = params.pop("strategy", None)
    if strategy is not None and args.strategy is not None and strategy != args.strategy:
        raise NniBioError(f"--strategy {args.strategy} disagrees with the NNI parameter strategy={strategy!r}: "
                          "drop one of them")
    strategy = strategy or args.strategy
    if strategy is None:
        raise NniBioError("no strategy: run under nnictl with a 'strategy' parameter, or pass --strategy "
                          "(darts, darts2, gumbel, enas, egnas)")
    hparams = {name: getattr(args, name) for name in (*_HPARAM_FLAGS, "amp", "channels_last", "compile",
                                                      "edge_normalization")
               if getattr(args, name, None) is not None}
    hparams.update(json.loads(args.hparams))
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise NniBioError(f"--set takes NAME=VALUE, got {item!r}")
        try:
            hparams[name.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            hparams[name.replace("-", "_")] = value
    hparams.update(params)  # what the tuner sends wins
    if isinstance(hparams.get("temperature"), list):
        hparams["temperature"] = tuple(hparams["temperature"])
    return strategy, hparams


def run(args: argparse.Namespace) -> dict[str, Any]:
    import nni

    from nni_bio.nas.candidates import parse_candidate
    from nni_bio.strategies.oneshot.search import EpochRecord
    from nni_bio.strategies.oneshot.loop import default_retrain_epochs, retrain_derived, run_oneshot

    strategy, hparams = resolve(args, nni_parameters())
    retrain_epochs = (default_retrain_epochs(args.space, args.dataset) if args.retrain_epochs is None
                      else args.retrain_epochs)
    if retrain_epochs < 0:
        raise NniBioError(f"--retrain-epochs must be >= 0, got {retrain_epochs}")
    if args.threads:
        torch.set_num_threads(args.threads)
    output = trial_output(args.output, "runs/oneshot")
    print(f"one-shot search: strategy {strategy}, space {args.space}, data set {args.dataset}, "
          f"{args.epochs} epochs, {json.dumps(hparams, sort_keys=True)}; then "
          + (f"{retrain_epochs} epochs retraining the derived architecture" if retrain_epochs else
             "no retraining (--retrain-epochs N to measure the derived architecture trained on its own)"),
          flush=True)

    from nni_bio.search_spaces import space_class
    from nni_bio.search_spaces import space_arguments

    space_cls = space_class(args.space)
    space_args = space_arguments(space_cls, json.loads(args.space_args), args.dataset)
    checkpoint, owner, resume = checkpoint_plan(args, output)

    with TrialReporter(output, tags=_TENSORBOARD_TAGS) as reporter:
        def report(r: EpochRecord) -> None:
            metrics = {"default": r.val_acc, "supernet_val_acc": r.val_acc, "derived_val_acc": r.derived_val_acc,
                       "supernet_val_loss": r.val_loss, "supernet_train_acc": r.train_acc,
                       "supernet_train_loss": r.train_loss, "lr": r.lr, **r.extra}
            reporter.epoch({k: float(v) for k, v in metrics.items() if math.isfinite(v)}, r.epoch)
            for label, dist in r.probs.items():
                for candidate, p in dist.items():
                    reporter.tensorboard.add_scalar(f"prob/{label}/{candidate}", p, r.epoch)
            reporter.tensorboard.add_text("architecture", json.dumps(r.sample, sort_keys=True), r.epoch)
            reporter.genotype(space_cls.export_genotype(r.sample, space_args))
            print(f"epoch {r.epoch}: supernet train loss {r.train_loss:.4f} acc {r.train_acc:.4f} | supernet val "
                  f"loss {r.val_loss:.4f} acc {r.val_acc:.4f} | derived architecture, shared weights: val acc "
                  f"{r.derived_val_acc:.4f} | {r.seconds:.1f} s | {json.dumps(r.sample, sort_keys=True)}", flush=True)

        def restored(history: list[EpochRecord]) -> None:
            print(f"resuming the search from its checkpoint {checkpoint} after epoch {len(history)}", flush=True)
            if resume.get("output") == owner["output"]:
                nni.trial.overwrite_intermediate_seq(len(history))  # NNI and TensorBoard hold the earlier epochs
            else:  # another folder (and trial): give it the whole curve
                for r in history:
                    report(r)

        result = run_oneshot(args.space, strategy, args.dataset, args.epochs, space_args=space_args, seed=args.seed,
                             data_dir=args.data_dir, on_epoch_end=report, device=args.device,
                             checkpoint=checkpoint, resume=bool(resume), on_resume=restored,
                             checkpoint_extra=owner, **hparams)
        reporter.genotype(result.genotype)

        retrained = None
        if retrain_epochs:
            print(f"retraining the derived architecture from scratch for {retrain_epochs} epochs", flush=True)

            def report_retrain(m: Any) -> None:
                reporter.tensorboard.add_scalar("retrain/val_acc", m.val_acc, m.epoch)
                reporter.tensorboard.add_scalar("retrain/train_loss", m.train_loss, m.epoch)
                print(f"retrain epoch {m.epoch}: train loss {m.train_loss:.4f} acc {m.train_acc:.4f} | "
                      f"val loss {m.val_loss:.4f} acc {m.val_acc:.4f}", flush=True)

            retrained = retrain_derived(result, retrain_epochs, data_dir=args.data_dir, on_epoch_end=report_retrain)

        final = final_metrics(result, retrained, retrain_epochs)
        reporter.final(final, {**result.as_dict(), "retrain": None if retrained is None else
                               {"epochs": retrain_epochs, **retrained.as_dict()}})
    print("derived architecture (slot: op @ learning rule):")
    for label, value in sorted(result.sample.items()):
        if "/input_" in label and label.replace("/input_", "/op_") in result.sample:
            continue  # printed with its op
        op, rule = parse_candidate(str(value)) if isinstance(value, str) else (json.dumps(value), None)
        source = result.sample.get(label.replace("/op_", "/input_")) if "/op_" in label else None
        print(f"  {label:<24} {op}" + (f"  @ {rule}" if rule else "") + (f"  <- node {source[0]}" if source else ""))
    print(f"genotype written to {output / 'genotype.json'}")
    first, *rest = describe_final(final)
    print(f"result: {first}", *rest, sep="\n")
    sys.stdout.flush()
    return final


#: the checkpoint's file name, and where a new search without --resume moves an older one
CHECKPOINT, PREVIOUS_CHECKPOINT = "checkpoint.pt", "checkpoint.previous.pt"


def _nni_trial() -> dict[str, str] | None:
    """This process's NNI experiment and trial ids (``None`` outside an NNI trial)."""
    experiment, trial = os.environ.get("NNI_EXP_ID"), os.environ.get("NNI_TRIAL_JOB_ID")
    if not experiment or not trial or os.environ.get("NNI_PLATFORM") in (None, "", "unittest"):
        return None
    return {"experiment": experiment, "trial": trial}


def checkpoint_plan(args: argparse.Namespace, output: Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Where the checkpoint goes, what identifies this run in it, and the existing checkpoint's
    identity when the search resumes from it (``{}``: a fresh start).

    Without ``--resume``, a checkpoint of another run is moved aside to :data:`PREVIOUS_CHECKPOINT`
    (a new search starts; nothing a search wrote is lost to a forgotten flag).
    """
    from nni_bio.train.checkpoint import load_checkpoint

    trial = _nni_trial()
    folder = Path(args.checkpoint_dir) if args.checkpoint_dir else output
    if args.checkpoint_dir and trial is not None:
        folder = folder / f"{trial['experiment']}-{trial['trial']}"
    checkpoint = folder / CHECKPOINT
    owner = {"output": str(output.resolve()), "nni": trial}
    if not checkpoint.is_file():
        return checkpoint, owner, {}
    saved = load_checkpoint(checkpoint)
    found = {"output": saved.get("output"), "nni": saved.get("nni"), "epoch": saved.get("epoch")}
    if args.resume or (trial is not None and found["nni"] == trial):  # the trial NNI relaunched on `nnictl resume`
        return checkpoint, owner, found
    kept = checkpoint.with_name(PREVIOUS_CHECKPOINT)
    os.replace(checkpoint, kept)
    print(f"warning: {checkpoint} held another search (epoch {found['epoch']}); starting a new one without --resume. "
          f"The old checkpoint is kept as {kept}: rename it back and pass --resume to continue that search.",
          file=sys.stderr, flush=True)
    return checkpoint, owner, {}


#: TensorBoard tags of the per-epoch metrics (the supernet's under supernet/)
_TENSORBOARD_TAGS = {"supernet_val_acc": "supernet/val_acc", "supernet_val_loss": "supernet/val_loss",
                     "supernet_train_acc": "supernet/train_acc", "supernet_train_loss": "supernet/train_loss",
                     "derived_val_acc": "derived/val_acc_shared_weights"}

#: what each possible ``default_metric`` of a one-shot trial measures, for people
DEFAULT_METRICS = {
    "retrained_val_acc": "validation accuracy of the derived architecture retrained from scratch for {epochs} epochs",
    "derived_val_acc": "validation accuracy of the derived architecture with the supernet's shared weights "
                       "(no retraining)",
    "supernet_val_acc": "validation accuracy of the supernet as the search evaluates it (the candidates' mixture; "
                        "enas: the greedy path with shared weights), not of a trained architecture",
}


def final_metrics(result: Any, retrained: Any, retrain_epochs: int) -> dict[str, Any]:
    """The trial's final result: ``default`` is the derived architecture's number (see the module docstring)."""
    best = max(result.history, key=lambda r: r.val_acc)
    final: dict[str, Any] = {"supernet_val_acc": result.final.val_acc, "best_supernet_val_acc": best.val_acc,
                             "best_supernet_epoch": best.epoch}
    if math.isfinite(result.final.derived_val_acc):
        final["derived_val_acc"] = result.final.derived_val_acc
    if retrained is not None:
        final["retrained_val_acc"], final["retrain_epochs"] = retrained.final.val_acc, retrain_epochs
        final["default_metric"] = "retrained_val_acc"
    else:
        final["default_metric"] = "derived_val_acc" if "derived_val_acc" in final else "supernet_val_acc"
    final = {"default": final[final["default_metric"]], **final}
    final.update(strategy=result.strategy, sample=json.dumps(result.sample, sort_keys=True))
    return final


def describe_final(final: dict[str, Any]) -> list[str]:
    """Lines saying what a one-shot trial's final ``default`` is, and the supernet's number as such."""
    metric = final.get("default_metric", "supernet_val_acc")
    what = DEFAULT_METRICS.get(metric, metric).format(epochs=final.get("retrain_epochs", "?"))
    lines = [f"{final['default']:.4f} = {what} (the final default metric)"]
    if metric != "derived_val_acc" and "derived_val_acc" in final:
        lines.append(f"  derived architecture with the supernet's shared weights: {final['derived_val_acc']:.4f}")
    if metric != "supernet_val_acc" and "supernet_val_acc" in final:
        lines.append(f"  supernet as the search evaluates it (last epoch): {final['supernet_val_acc']:.4f}, "
                     "not the derived architecture's accuracy")
    return lines


def main(argv: list[str] | None = None) -> int:
    return run_as_trial(run, parse_args(argv), "one-shot trial")


__all__ = ["CHECKPOINT", "DEFAULT_METRICS", "PREVIOUS_CHECKPOINT", "checkpoint_plan", "describe_final", "final_metrics",
           "main", "nni_parameters", "parse_args", "resolve", "run"]


if __name__ == "__main__":
    sys.exit(main())
