"""Shared fixtures: a fresh rule registry for every test, a fixed seed, and fake plugin distributions."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from nni_bio.core import _registry

ENV_VARS = ("NNI_BIO_DISABLE_PLUGIN_AUTOLOAD", "NNI_BIO_BLOCK_PLUGINS")


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Rediscover rules before and after each test, with the plugin switches unset."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    _registry.reset_registry()
    yield
    _registry.reset_registry()


@pytest.fixture(autouse=True)
def seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def one_thread() -> Iterator[None]:
    """Tensors here are tiny: intra-op threads only add overhead (and stall badly on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


FakeDistribution = Callable[..., Path]


@pytest.fixture
def fake_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDistribution]:
    """Factory writing a pip-free distribution: ``<name>-<version>.dist-info`` plus modules, on sys.path.

    ``make(name, rules={"rule_name": "module:attr"}, modules={"module": "source"}, version="1.0")``
    returns the folder; each distribution gets its own folder (importlib.metadata caches per folder).
    """
    created: list[str] = []

    def make(name: str, *, rules: dict[str, str], modules: dict[str, str] | None = None,
             version: str = "1.0") -> Path:
        root = tmp_path / f"site-{name}"
        info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = "".join(f"{rule} = {target}\n" for rule, target in rules.items())
        (info / "entry_points.txt").write_text(f"[nni_bio.rules]\n{lines}")
        for module, source in (modules or {}).items():
            (root / f"{module}.py").write_text(textwrap.dedent(source))
            created.append(module)
        monkeypatch.syspath_prepend(str(root))  # also invalidates the import caches
        _registry.reset_registry()
        return root

    yield make
    for module in created:
        sys.modules.pop(module, None)


@pytest.fixture
def random_search(tmp_path: Path):
    """Run NNI's Random strategy in-process (sequential engine) on a space.

    Returns ``run(space, score, trials=2) -> (experiment, models)``: ``score(model)`` is the final
    result each trial reports, ``models`` the networks NNI built; the experiment is stopped.
    """

    def run(space, score, trials: int = 2):
        import nni
        from nni.nas.evaluator import FunctionalEvaluator
        from nni.nas.experiment import NasExperiment
        from nni.nas.experiment.config import SequentialEngineConfig
        from nni.nas.strategy import Random

        seen = []

        def evaluate(model) -> None:
            seen.append(model)
            nni.report_final_result(score(model))

        experiment = NasExperiment(space, FunctionalEvaluator(evaluate), Random())
        experiment.config.execution_engine = SequentialEngineConfig()
        experiment.config.max_trial_number = trials
        experiment.config.experiment_working_directory = str(tmp_path)
        try:
            experiment.run()
        finally:
            experiment.stop()
        return experiment, seen

    return run


@pytest.fixture
def nnictl(tmp_path: Path) -> Iterator[object]:
    """``nnictl`` with a private HOME (its experiment list); every experiment it started is stopped afterwards."""
    from nni_tools import Nnictl

    nnictl = Nnictl(tmp_path / "manager-home")
    yield nnictl
    nnictl.stop_all()


def _tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """Mount a tmpfs at ``folder`` for the test. Mounting needs root; elsewhere the test is skipped, except in CI
    (CI=true, where .ci/run runs as root), where it must run."""
    import os
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs here ({options}): {mounted.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI runs as root and must run this test")
        pytest.skip(reason)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on a read-only tmpfs: unwritable even for root (chmod stops nothing for root)."""
    yield from _tmpfs(tmp_path / "read-only", "ro,size=1m")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a 1 MiB tmpfs: a disk that fills up (``nni_tools.fill_disk`` fills it)."""
    yield from _tmpfs(tmp_path / "small-disk", "size=1m")

