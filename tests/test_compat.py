"""Every NNI 3.0 shim in nni_bio._compat does what it claims."""

import sys

import nni_bio.nas  # noqa: F401  (applies the shims)
from nni_bio import _compat


def test_apply_is_idempotent():
    _compat.apply()
    _compat.apply()


def test_gym_is_aliased_to_gymnasium_so_nni_rl_imports():
    import gymnasium

    assert sys.modules["gym"] is gymnasium
    from nni.nas.strategy import PolicyBasedRL  # imports nni's _rl_impl, which does `import gym`

    assert PolicyBasedRL is not None


def test_raw_format_freeze_copies_the_sample():
    from nni.nas.space.space import RawFormatModelSpace

    assert getattr(RawFormatModelSpace.freeze, "_nni_bio_patched", False)
    from nni_bio.search_spaces.tiny import TinySpace

    space = RawFormatModelSpace.from_model(TinySpace(rules=["usf", "fa"], width=4))
    sample = {"conv1": "conv_3x3@fa", "conv2": "skip_connect", "fc": "usf"}
    frozen = space.freeze(sample)
    sample.clear()  # GridSearch empties its shared dict after handing it out
    assert frozen.sample["fc"] == "usf"


def test_enas_concat_loader_repacks_batches(monkeypatch):
    from nni.nas.oneshot.pytorch import _dataloader
    from pytorch_lightning.utilities.combined_loader import CombinedLoader

    assert getattr(_dataloader.ConcatLoader, "_nni_bio_patched", False)
    monkeypatch.setattr(CombinedLoader, "__next__", lambda self: ("batch", 3, 1))
    # NNI's training_step expects (batch, batch_idx, dataloader_idx) inside the batch again
    assert _dataloader.ConcatLoader.__next__(object()) == (("batch", 3, 1), 3, 1)


def test_warnings_are_filtered():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        _compat.filter_warnings()
        warnings.warn("<class 'x'> is found to be not a nn.Module, which is unexpected.", RuntimeWarning)
    assert not caught


def test_worker_pip_guard_reports_nni_without_installing(capsys):
    assert _compat.worker_pip_guard() == 0
    out = capsys.readouterr().out
    assert "skipped `python -m pip install nni --upgrade`" in out and f"has nni {_compat.NNI_VERSION}" in out


def test_worker_bin_python_answers_nnis_pip_upgrade_and_runs_everything_else(tmp_path):
    """scripts/nni-worker/bin/python, the remote examples' pythonPath; offline: pip would find no index."""
    import os
    import subprocess
    from pathlib import Path

    bin_dir = Path(__file__).resolve().parent.parent / "scripts" / "nni-worker" / "bin"
    env = {**os.environ, "NNI_BIO_WORKER_PYTHON": sys.executable, "PIP_CONFIG_FILE": os.devnull,
           "PIP_INDEX_URL": "http://127.0.0.1:9/simple/", "PIP_NO_INDEX": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([str(bin_dir / "python"), *_compat.NNI_WORKER_PIP_COMMAND], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "nni-bio worker: skipped" in done.stdout, done.stdout + done.stderr
    assert "Requirement" not in done.stdout  # pip never ran
    done = subprocess.run([str(bin_dir / "python3"), "-c", "import sys; print(sys.prefix)"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == sys.prefix

