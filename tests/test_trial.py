"""The NNI trial entry point, run outside NNI with an explicit sample."""

import json
import subprocess
import sys

from nni_bio.trial import EXIT_DIVERGED, main

SAMPLE = '{"conv1": "conv_3x3", "conv2": "skip_connect", "fc": "fa"}'


def test_trial_trains_and_writes_genotype_result_and_tensorboard(tmp_path):
    assert main(["--space", "tiny", "--dataset", "digits", "--epochs", "2", "--sample", SAMPLE,
                 "--output", str(tmp_path)]) == 0
    genotype = json.loads((tmp_path / "genotype.json").read_text())
    assert genotype["space"] == "tiny" and genotype["sample"]["fc"] == "fa"
    assert genotype["args"]["in_channels"] == 1 and genotype["args"]["num_classes"] == 10
    result = json.loads((tmp_path / "result.json").read_text())
    assert len(result["history"]) == 2 and 0.3 < result["default"] <= 1
    assert any((tmp_path / "tensorboard").iterdir())


def test_diverging_trial_fails_with_a_clear_message(tmp_path):
    done = subprocess.run([sys.executable, "-m", "nni_bio.trial", "--space", "tiny", "--dataset", "digits",
                           "--epochs", "2", "--lr", "1e30", "--grad-clip", "0", "--sample", SAMPLE,
                           "--output", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_DIVERGED
    assert "trial FAILED" in done.stderr and "diverged" in done.stderr


def test_trial_without_a_sample_outside_nni_says_what_to_do(tmp_path, capsys):
    assert main(["--space", "tiny", "--dataset", "digits", "--output", str(tmp_path)]) == 2
    assert "--sample" in capsys.readouterr().err
