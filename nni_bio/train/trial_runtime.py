"""What runs inside every trial, multi-trial or one-shot: where its files go, how it reports (NNI,
TensorBoard, ``genotype.json`` / ``result.json``), how an architecture is trained from its sample,
and the exit status NNI shows when it fails.

The two trial entry points (``python -m nni_bio.trial`` and ``python -m
nni_bio.strategies.oneshot.trial``) and the evaluator of ``run_multi_trial`` are thin layers over
this module, so a trial reports the same way however it was launched.

Example (outside NNI the reports go to TensorBoard and the files only):
    >>> import tempfile
    >>> from nni_bio.train.training import TrainConfig
    >>> sample = {"conv1": "conv_3x3", "conv2": "conv_3x3@usf", "fc": "frsf"}
    >>> final = train_architecture("tiny", {"width": 4}, sample, dataset="digits", train_limit=128,
    ...                            config=TrainConfig(epochs=1), output=tempfile.mkdtemp(), say=None)
    >>> sorted(final)[:3]
    ['best_val_acc', 'best_val_epoch', 'default']
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nni_bio.core.errors import NniBioError

__all__ = ["EXIT_DIVERGED", "SEARCH_SIZE_KEYS", "TrialReporter", "load_splits", "network_at_search_size",
           "run_as_trial", "train_architecture", "trial_output"]

#: exit status of a trial whose training diverged (NaN/inf loss); other nni-bio errors exit with 2
EXIT_DIVERGED = 3
#: genotype arguments that give a network its search-time size (``nni-bio train`` rebuilds at final size)
SEARCH_SIZE_KEYS = ("width", "num_cells", "cells_per_stage", "depth")


def trial_output(output: str | os.PathLike | None, default: str) -> Path:
    """The trial's output folder, created: ``output``, else ``$NNI_OUTPUT_DIR`` (under NNI), else ``default``."""
    folder = Path(output or os.environ.get("NNI_OUTPUT_DIR") or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class TrialReporter:
    """A trial's reports: NNI's intermediate and final results, TensorBoard scalars under
    ``OUTPUT/tensorboard``, and ``genotype.json`` / ``result.json`` in ``OUTPUT``.

    The TensorBoard writer is made at the first scalar (its import is not start-up). Use it as a
    context manager, or call :meth:`close`.
    """

    def __init__(self, output: Path, tags: Mapping[str, str] | None = None):
        self.output = Path(output)
        self.tags = dict(tags or {})  # metric name -> TensorBoard tag (default: the name)
        self._writer: Any = None

    @property
    def tensorboard(self) -> Any:
        """The ``SummaryWriter`` of this trial."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.output / "tensorboard"))
        return self._writer

    def epoch(self, metrics: Mapping[str, float], step: int) -> None:
        """Report one epoch: every metric to NNI (``default`` first) and, but ``default``, to TensorBoard."""
        import nni

        for key, value in metrics.items():
            if key != "default":
                self.tensorboard.add_scalar(self.tags.get(key, key), value, step)
        nni.report_intermediate_result(dict(metrics))

    def genotype(self, genotype: Mapping[str, Any]) -> None:
        """Write ``genotype.json`` (what ``nni-bio train --genotype`` reads)."""
        (self.output / "genotype.json").write_text(json.dumps(genotype, indent=2))

    def final(self, final: Mapping[str, Any], details: Mapping[str, Any] | None = None) -> None:
        """Report the final result to NNI; write it with ``details`` to ``result.json``."""
        import nni

        nni.report_final_result(dict(final))
        (self.output / "result.json").write_text(json.dumps({**final, **(details or {})}, indent=2, default=str))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TrialReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def network_at_search_size(space_cls: type, genotype: Mapping[str, Any]) -> Any:
    """The network of ``genotype`` at the width and depth the space was searched at, fresh weights."""
    size = {k: v for k, v in genotype["args"].items() if k in SEARCH_SIZE_KEYS}
    return space_cls.build_network(genotype, **size)


def load_splits(dataset: str, data_dir: str | None, seed: int, train_limit: int = 0, *, augment: bool = True,
                cutout: int = 0) -> tuple[Any, Any]:
    """The ``train`` split (its first ``train_limit`` images when > 0; standard augmentation and Cutout as asked)
    and the ``val`` split of ``dataset``."""
    from torch.utils.data import Subset

    from nni_bio.data import get_dataset

    train_set = get_dataset(dataset, "train", data_dir, seed=seed, augment=augment, cutout=cutout)
    if train_limit:
        train_set = Subset(train_set, range(min(train_limit, len(train_set))))
    return train_set, get_dataset(dataset, "val", data_dir, seed=seed)


def train_architecture(space: str, space_args: Mapping[str, Any], sample: Mapping[str, Any], *,
                       dataset: str = "digits", config: Any = None, data_dir: str | None = None,
                       train_limit: int = 0, output: str | os.PathLike | None = None,
                       say: Callable[[str], None] | None = print, augment: bool = True,
                       cutout: int = 0) -> dict[str, Any]:
    """Train the architecture ``sample`` of ``space`` as a multi-trial trial does, and report it.

    The network is ``space.build_network(genotype)`` at search size with its layers' rules, trained
    by :func:`nni_bio.train.training.train` with ``config`` (a :class:`~nni_bio.train.training.TrainConfig`,
    its ``seed`` also seeding the weights and the data split). Every epoch goes to NNI and TensorBoard;
    ``genotype.json`` and ``result.json`` go to ``output`` (:func:`trial_output`). The final result
    carries the genotype as a JSON string, so it reaches the NNI manager from a remote worker too.
    Returns the final result. A diverging run raises :class:`~nni_bio.train.training.DivergenceError`.
    """
    import torch

    from nni_bio.search_spaces import space_arguments, space_class
    from nni_bio.core.swap import parameter_counts, rule_map
    from nni_bio.train.training import TrainConfig, train

    config = config or TrainConfig()
    say = say or (lambda _line: None)
    space_cls = space_class(space)
    args = space_arguments(space_cls, dict(space_args), dataset)
    genotype = space_cls.export_genotype(dict(sample), args)
    folder = trial_output(output, "runs/trial")
    torch.manual_seed(config.seed)
    model = network_at_search_size(space_cls, genotype)
    rules = rule_map(model)
    say(f"architecture: {json.dumps(dict(sample), sort_keys=True)}")
    say(f"outputs (genotype.json, result.json, tensorboard/): {folder.resolve()}")
    say(f"layer rules: {json.dumps(rules if len(rules) <= 12 else dict(Counter(rules.values())))}")
    train_set, val_set = load_splits(dataset, data_dir, config.seed, train_limit, augment=augment, cutout=cutout)

    with TrialReporter(folder, tags={"train_loss": "train/loss", "train_acc": "train/acc", "val_loss": "val/loss",
                                     "val_acc": "val/acc"}) as reporter:
        reporter.genotype(genotype)

        def report(m: Any) -> None:
            reporter.epoch({"default": m.val_acc, "val_loss": m.val_loss, "train_acc": m.train_acc,
                            "train_loss": m.train_loss}, m.epoch)
            reporter.tensorboard.add_scalar("val/acc", m.val_acc, m.epoch)
            reporter.tensorboard.add_scalar("lr", m.lr, m.epoch)
            say(f"epoch {m.epoch}: train loss {m.train_loss:.4f} acc {m.train_acc:.4f} | "
                f"val loss {m.val_loss:.4f} acc {m.val_acc:.4f}")

        result = train(model, train_set, val_set, config, on_epoch_end=report)
        final = {"default": result.final.val_acc, "val_loss": result.final.val_loss,
                 "best_val_acc": result.best_val.val_acc, "best_val_epoch": result.best_val.epoch,
                 **parameter_counts(model),
                 # also in the NNI manager's records: a remote trial's output folder stays on its worker
                 "genotype": json.dumps(genotype, sort_keys=True)}
        reporter.final(final, {"genotype": genotype, **result.as_dict()})
    return final


def run_as_trial(run_fn: Callable[[Any], Any], args: Any, what: str = "trial") -> int:
    """Run ``run_fn(args)`` and map failures to exit statuses NNI shows: a diverging run exits with
    :data:`EXIT_DIVERGED`, any other nni-bio error with 2, both with the reason on stderr. Under NNI
    the run happens in a supervised child, so a run killed by a signal is FAILED too
    (:func:`nni_bio.nas._compat.supervise_trial`)."""
    from nni_bio.nas import _compat
    from nni_bio.train.training import DivergenceError

    _compat.filter_warnings()
    _compat.supervise_trial(what)
    try:
        run_fn(args)
    except DivergenceError as exc:
        print(f"nni-bio {what} FAILED: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except NniBioError as exc:
        print(f"nni-bio {what} error: {exc}", file=sys.stderr)
        return 2
    return 0
