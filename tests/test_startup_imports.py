"""Trial start-up (issue 11 item 4, issue 19 item 4): a multi-trial trial imports neither pytorch-lightning
(nor what it pulls in), scikit-learn, torch._dynamo, scipy.stats nor pandas; the numpy stand-ins give exactly
what scikit-learn gave and the lean optimizers exactly what torch's give."""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from nni_bio.data.digits import _split_indices, load_digits_arrays, stratified_split
from nni_bio.train._optim import lean


def test_digits_arrays_are_scikit_learns() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = load_digits_arrays()
    assert np.array_equal(images, bunch.images) and np.array_equal(labels, bunch.target)


@pytest.mark.parametrize("seed", range(8))
def test_stratified_split_is_scikit_learns(seed: int) -> None:
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(seed)
    for labels in (load_digits_arrays()[1], rng.integers(0, 7, 101), np.repeat(np.arange(5), [3, 3, 4, 9, 2])):
        items = rng.permutation(len(labels)) + 1000
        for n_test in (len(np.unique(labels)) + 1, len(labels) // 3):
            ours = stratified_split(items, labels, n_test, seed)
            theirs = train_test_split(items, test_size=n_test, stratify=labels, random_state=seed)
            assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))


def test_digits_splits_are_the_scikit_learn_ones() -> None:
    from sklearn.model_selection import train_test_split

    labels = load_digits_arrays()[1]
    index = np.arange(len(labels))
    for seed in (0, 3):
        rest, test = train_test_split(index, test_size=397, stratify=labels, random_state=0)
        train, val = train_test_split(rest, test_size=400, stratify=labels[rest], random_state=seed)
        ours = _split_indices(labels, seed)
        assert np.array_equal(ours["train"], np.sort(train)) and np.array_equal(ours["val"], np.sort(val))
        assert np.array_equal(ours["test"], np.sort(test)) and np.array_equal(ours["train+val"], np.sort(rest))


RESNET8 = ("fc", "s1b0c1", "s1b0c2", "s2b0c1", "s2b0c2", "s2b0proj", "s3b0c1", "s3b0c2", "s3b0proj")
TRIALS = {  # the shipped digits trial; the Fashion-MNIST study's ResNet-8 trial (on digits), with brSF's host state
    "tiny": ["--space", "tiny", "--sample", json.dumps({"conv1": "conv_3x3", "conv2": "sep_conv_3x3@usf", "fc": "frsf"})],
    "rule_per_layer": ["--space", "rule_per_layer", "--space-args", json.dumps({"depth": 8, "width": 4}),
                       "--sample", json.dumps({label: "brsf" for label in RESNET8})],
}


@pytest.mark.parametrize("space", sorted(TRIALS))
def test_a_trial_does_not_import_lightning_scikit_learn_or_dynamo(tmp_path, space) -> None:
    argv = ["nni_bio.trial", "--dataset", "digits", "--epochs", "1", "--train-limit", "64", *TRIALS[space],
            "--output", str(tmp_path)]
    code = (  # python -m nni_bio.trial ..., then a look at what it imported
        "import runpy, sys\n"
        f"sys.argv = {argv!r}\n"
        "try:\n"
        "    runpy.run_module('nni_bio.trial', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exit:\n"
        "    status = exit.code\n"
        "heavy = sorted(m for m in ('pytorch_lightning', 'lightning', 'torchmetrics', 'torchvision', 'sklearn',"
        " 'tianshou', 'torch._dynamo', 'scipy.stats', 'pandas') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
        "sys.exit(status)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAVY []" in proc.stdout, proc.stdout[-2000:]


def _trajectory(cls: type, steps: int = 4, **kwargs) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    optimizer = cls(model.parameters(), **kwargs)
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(6, 4)).square().sum().backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()], optimizer


@pytest.mark.parametrize("cls, kwargs", [(torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-3)),
                                         (torch.optim.Adam, dict(lr=0.01, weight_decay=1e-3))])
def test_lean_optimizers_are_torchs(cls: type, kwargs: dict) -> None:
    ours, optimizer = _trajectory(lean(cls), **kwargs)
    theirs, reference = _trajectory(cls, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert isinstance(optimizer, cls) and repr(optimizer).split()[0] == cls.__name__
    torch.testing.assert_close(optimizer.state_dict(), reference.state_dict(), rtol=0, atol=0)
    twin = pickle.loads(pickle.dumps(optimizer))
    assert type(twin) is type(optimizer) and type(copy.deepcopy(optimizer)) is type(optimizer)


def test_lean_optimizer_does_not_import_dynamo() -> None:
    code = ("import sys, torch\n"
            "from nni_bio.train._optim import lean\n"
            "m = torch.nn.Linear(3, 2)\n"
            "o = lean(torch.optim.SGD)(m.parameters(), lr=0.1, momentum=0.9)\n"
            "for _ in range(2):\n"
            "    o.zero_grad(); m(torch.randn(4, 3)).sum().backward(); o.step()\n"
            "o.load_state_dict(o.state_dict())\n"
            "print('DYNAMO', 'torch._dynamo' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert "DYNAMO False" in proc.stdout, proc.stderr[-2000:]
