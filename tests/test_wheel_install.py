"""A real pip install: the wheel built from this checkout, installed with the pinned stack into a new virtual
environment, works from a folder outside the repository: `nni-bio examples`, `nni-bio setup-nni` and a
two-trial digits search through nnictl."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(command, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=1800, **kwargs)
    assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_examples_are_copied_and_never_overwritten(tmp_path):
    from nni_bio.commands.examples import copy_examples
    from nni_bio.core.errors import NniBioError

    written = copy_examples(tmp_path)
    names = {p.relative_to(tmp_path).as_posix() for p in written}
    assert {"digits.yml", "digits.choice_space.json", "studies/digits.yml", "README.md"} <= names
    (tmp_path / "digits.yml").write_text("mine")
    with pytest.raises(NniBioError, match="already holds"):
        copy_examples(tmp_path)
    assert (tmp_path / "digits.yml").read_text() == "mine"


@pytest.mark.slow
def test_the_wheel_installs_into_a_new_venv_and_searches_from_outside_the_repository(tmp_path):
    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "work"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, ROOT])
    wheel = next(dist.glob("nni_bio-*.whl"))
    run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", venv])
    run([venv / "bin" / "pip", "install", "-q", "-c", ROOT / "constraints.txt", wheel])
    work.mkdir()
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    where = run([venv / "bin" / "python", "-c", "import nni_bio; print(nni_bio.__file__)"], cwd=work, env=env)
    assert str(venv) in where.stdout  # the installed package, not this checkout
    run(["nni-bio", "examples", "."], cwd=work, env=env)
    run(["nni-bio", "setup-nni"], cwd=work, env=env)
    run(["nni-bio", "setup-nni", "--check"], cwd=work, env=env)
    config = (work / "digits-random.yml").read_text()
    config = re.sub(r"maxTrialNumber: \d+", "maxTrialNumber: 2", config)
    config = re.sub(r"--epochs \d+", "--epochs 1 --train-limit 200", config)
    (work / "digits-random.yml").write_text(config)
    search = subprocess.run(["nni-bio", "search", "digits-random.yml", "--timeout", "900"], cwd=work, env=env,
                            capture_output=True, text=True, timeout=1800)
    for exp_id in set(re.findall(r"nnictl stop (\w+)", search.stdout)):  # this search's experiment only
        subprocess.run([venv / "bin" / "nnictl", "stop", exp_id], cwd=work, env=env, capture_output=True, timeout=120)
    assert search.returncode == 0, search.stdout[-3000:] + search.stderr[-3000:]
    assert "best" in search.stdout.lower()
