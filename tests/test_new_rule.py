"""`nni-bio new-rule` writes a plugin distribution that installs (no network), passes its own tests, and whose
rule then appears everywhere: `nni-bio rules`, a search space's candidates, a one-epoch trial."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nni_bio.cli import main
from nni_bio.commands.new_rule import write_plugin
from nni_bio.core.errors import NniBioError


def run(command: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


@pytest.mark.parametrize("family", ["feedback", "local"])
def test_a_generated_plugin_installs_passes_its_tests_and_is_searchable(tmp_path, family):
    name = f"gen_{family}"
    assert main(["new-rule", name, "--family", family, "--dir", str(tmp_path)]) == 0
    folder = tmp_path / f"nni-bio-gen-{family}"
    site = tmp_path / "site"  # a real install of the generated sources, outside the project's environment
    done = run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                "--target", str(site), str(folder)], site, tmp_path)
    assert done.returncode == 0, done.stderr
    tests = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder / "tests")], site, tmp_path)
    assert tests.returncode == 0 and "3 passed" in tests.stdout, tests.stdout + tests.stderr
    rules = run([sys.executable, "-m", "nni_bio.cli", "rules", "--names"], site, tmp_path)
    assert name in rules.stdout.split()
    space = run([sys.executable, "-m", "nni_bio.cli", "export-space", "tiny", "--rules", f"{name},fa"], site, tmp_path)
    assert space.returncode == 0, space.stderr
    assert any(f"@{name}" in str(c) or c == name for spec in json.loads(space.stdout).values() for c in spec["_value"])
    sample = json.dumps({"conv1": "conv_3x3", "conv2": f"conv_3x3@{name}", "fc": name})
    trial = run([sys.executable, "-m", "nni_bio.trial", "--space", "tiny", "--space-args",
                 json.dumps({"rules": [name, "fa"], "width": 4}), "--dataset", "digits", "--epochs", "1",
                 "--train-limit", "200", "--sample", sample, "--output", str(tmp_path / "trial")], site, tmp_path)
    assert trial.returncode == 0, trial.stdout[-2000:] + trial.stderr[-2000:]
    assert json.loads((tmp_path / "trial" / "result.json").read_text())["default"] > 0


def test_bad_names_and_existing_folders_are_refused_and_nothing_is_overwritten(tmp_path):
    with pytest.raises(NniBioError, match="lower-case letters"):
        write_plugin("My-Rule", "feedback", tmp_path)
    with pytest.raises(NniBioError, match="already installed"):
        write_plugin("usf", "feedback", tmp_path)
    folder = write_plugin("fresh_rule", "local", tmp_path)
    (folder / "README.md").write_text("mine")
    with pytest.raises(NniBioError, match="already exists"):
        write_plugin("fresh_rule", "local", tmp_path)
    assert (folder / "README.md").read_text() == "mine"
