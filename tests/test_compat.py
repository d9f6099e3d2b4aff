"""Every NNI 3.0 shim in nni_bio.nas._compat does what it claims."""

import os
import sys

import pytest

import nni_bio.nas.mutables  # noqa: F401  (applies the shims)
from nni_bio.nas import _compat


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
    sample = {"conv1": "conv_3x3", "conv2": "skip_connect", "fc": "usf"}
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


SUPERVISED = """
import importlib.util, os, sys, time
spec = importlib.util.spec_from_file_location("compat", {path!r})
compat = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compat)
compat.supervise_trial("test trial")
print(os.getpid(), os.getppid(), flush=True)
if sys.argv[1] == "exit3":
    sys.exit(3)
time.sleep(60)
"""


def supervised(tmp_path, mode: str, nni: bool = True, ignore_sigint: bool = False):
    """A process that calls supervise_trial as nni_bio.trial does, started as NNI would (NNI_TRIAL_JOB_ID)."""
    import os
    import subprocess

    script = tmp_path / "supervised.py"
    script.write_text(SUPERVISED.format(path=_compat.__file__))
    env = {k: v for k, v in os.environ.items() if k != "NNI_TRIAL_JOB_ID"}
    if nni:
        env["NNI_TRIAL_JOB_ID"] = "test"
    import signal

    def start() -> None:  # a background job of a non-interactive shell starts with SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_IGN if ignore_sigint else signal.SIG_DFL)

    proc = subprocess.Popen([sys.executable, str(script), mode], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=start)
    pid, ppid = map(int, proc.stdout.readline().split())
    return proc, pid, ppid


def test_supervised_trial_passes_the_exit_status_through(tmp_path):
    proc, pid, ppid = supervised(tmp_path, "exit3")
    assert ppid == proc.pid != pid  # the training runs in a child
    assert proc.wait(timeout=30) == 3


def test_supervised_trial_killed_by_a_signal_fails_with_the_reason_on_stderr(tmp_path):
    import os
    import signal

    proc, pid, _ = supervised(tmp_path, "sleep")
    os.kill(pid, signal.SIGKILL)  # e.g. the kernel's OOM killer
    assert proc.wait(timeout=30) == 128 + signal.SIGKILL  # an exit status: NNI says FAILED, not USER_CANCELED
    assert f"test trial FAILED: the training process {pid} was killed by SIGKILL" in proc.stderr.read()


@pytest.mark.parametrize("ignore_sigint", [False, True], ids=["plain", "started-with-SIGINT-ignored"])
def test_supervised_trial_cancelled_by_nni_dies_of_the_signal_with_its_child(tmp_path, ignore_sigint):
    import os
    import signal
    import time

    proc, pid, _ = supervised(tmp_path, "sleep", ignore_sigint=ignore_sigint)
    proc.send_signal(signal.SIGINT)  # NNI's cancel / early stop
    assert proc.wait(timeout=30) == -signal.SIGINT  # died of it: NNI still says USER_CANCELED / EARLY_STOPPED
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the training process {pid} outlived its cancelled trial")


def test_outside_nni_the_trial_runs_in_the_same_process(tmp_path):
    proc, pid, _ = supervised(tmp_path, "exit3", nni=False)
    assert pid == proc.pid and proc.wait(timeout=30) == 3


V3_RACE = """
require('common/globals/unittest').resetGlobals();
const { V3asV1 } = require('training_service/v3/compat');
const sent = [];
let onRequest;
const v3 = {
    init: async () => {}, start: async () => [{ id: 'env', type: 'hot', host: 'worker' }],
    uploadDirectory: async () => {}, onRequestParameter: cb => { onRequest = cb; }, onMetric: () => {},
    onTrialStart: () => {}, onTrialEnd: () => {}, onEnvironmentUpdate: () => {},
    sendParameter: async (trialId, parameter) => { sent.push([trialId, parameter]); },
    createTrial: async (_env, _command, _dir, seq) => {
        if (seq === 1) { await onRequest('trial1'); }  // asks before the manager knows its id
        return `trial${seq}`;
    },
};
const ts = Object.create(V3asV1.prototype);  // the real methods, a fake v3 training service
Object.assign(ts, { config: { trialCommand: 'python -m nni_bio.trial' }, v3, emitter: new (require('events'))(),
    trialJobs: {}, parameters: [], allocatedParameters: new Map(), environments: [], lastEnvId: '',
    nniBioWaiting: new Set(), startDeferred: { promise: Promise.resolve(), resolve: () => {} } });
(async () => {
    await ts.start();
    for (const seq of [0, 1, 2]) {
        const value = JSON.stringify({ parameter_id: seq, parameters: { slot: `p${seq}` } });
        await ts.submitTrialJob({ sequenceId: seq, hyperParameters: { value, index: 0 } });
    }
    await onRequest('trial2');  // the later trial finished starting up first
    await onRequest('trial0');
    console.log(JSON.stringify(sent));
})().catch(error => { console.error(error); process.exit(1); });
"""


def test_remote_trials_get_the_parameters_the_manager_records_for_them(tmp_path):
    """NNI 3.0's V3asV1 handed queued parameters to whichever trial asked first; patched, each trial's own."""
    import json
    import os
    import subprocess

    node_dir = _compat.nni_node_dir()
    _compat.patch_v3_parameter_binding()  # what scripts/setup.sh does; idempotent
    assert _compat.patch_v3_parameter_binding() is False
    script = tmp_path / "v3_race.js"
    script.write_text(V3_RACE)
    done = subprocess.run([os.path.join(node_dir, "node"), str(script)], cwd=node_dir, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "NODE_PATH": node_dir})
    assert done.returncode == 0, done.stdout + done.stderr
    sent = sorted((trial, json.loads(record)) for trial, record in json.loads(done.stdout.strip().splitlines()[-1]))
    assert [(trial, record["parameters"]["slot"]) for trial, record in sent] == [
        ("trial0", "p0"), ("trial1", "p1"), ("trial2", "p2")]
    assert all(record[_compat.BOUND_KEY] is True for _, record in sent)  # so each trial can tell


def _unpatched_compat_js(tmp_path):
    """NNI 3.0's own compat.js (the installed one with nni-bio's patch undone) in a folder laid out like nni_node."""
    text = open(os.path.join(_compat.nni_node_dir(), *_compat._V3_COMPAT_JS), encoding="utf-8").read()
    for pieces, appended in ((_compat._V3_PATCH, _compat._V3_PATCH_APPENDED), (_compat._V3_PATCH_V1, "")):
        if all(text.count(new) == 1 for _, new in pieces) and text.endswith(appended):
            text = text[:len(text) - len(appended)] if appended else text
            for old, new in pieces:
                text = text.replace(new, old)
            break
    path = tmp_path.joinpath(*_compat._V3_COMPAT_JS)
    path.parent.mkdir(parents=True)
    path.write_text(text, encoding="utf-8")
    return path, text


def test_the_first_version_of_the_binding_patch_is_upgraded_in_place(tmp_path):
    path, original = _unpatched_compat_js(tmp_path)
    assert _compat._V3_PATCH_V1_MARK not in original
    assert _compat.patch_v3_parameter_binding(str(tmp_path)) is True
    fresh = path.read_text()
    path.write_text(original)  # what an earlier nni-bio left: bound, not marked
    assert _compat._patch_text(str(path), _compat._V3_PATCH_V1, "", _compat._V3_PATCH_V1_MARK, "bind") is True
    assert _compat._V3_PATCH_MARK not in path.read_text()
    assert _compat.patch_v3_parameter_binding(str(tmp_path)) is True
    assert path.read_text() == fresh and _compat.patch_v3_parameter_binding(str(tmp_path)) is False


def test_a_trial_refuses_parameters_an_unpatched_manager_handed_out(monkeypatch):
    import nni.trial
    import pytest

    from nni_bio.core.errors import NniBioError

    monkeypatch.setattr(nni.trial, "_params", {"parameter_id": 0, "parameters": {"fc": "usf"}})
    monkeypatch.delenv("NNI_TRIAL_COMMAND_CHANNEL", raising=False)
    _compat.check_parameters_bound()  # standalone (no NNI channel): nothing to check
    monkeypatch.setenv("NNI_TRIAL_COMMAND_CHANNEL", "ws://127.0.0.1:8080/platform/local/trial")
    with pytest.raises(NniBioError, match=r"without nni-bio's patch.*nni-bio setup-nni"):
        _compat.check_parameters_bound()
    monkeypatch.setattr(nni.trial, "_params", {"parameter_id": 0, "parameters": {"fc": "usf"}, _compat.BOUND_KEY: True})
    _compat.check_parameters_bound()


def test_v3_parameter_binding_refuses_a_manager_it_does_not_know(tmp_path):
    import pytest

    compat_js = tmp_path.joinpath(*_compat._V3_COMPAT_JS)
    compat_js.parent.mkdir(parents=True)
    compat_js.write_text("class V3asV1 {}\n")
    with pytest.raises(RuntimeError, match="cannot bind trial parameters"):
        _compat.patch_v3_parameter_binding(str(tmp_path))
    assert compat_js.read_text() == "class V3asV1 {}\n"


def test_a_lean_trial_imports_nni_without_scipy_stats_or_pandas_and_both_still_work_later():
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys
        from nni_bio.nas import _compat
        _compat.lean_trial()
        import nni, nni.mutable, json_tricks
        print("AFTER_IMPORT", "nni" in sys.modules, "scipy.stats" in sys.modules, "pandas" in sys.modules)
        x = nni.mutable.Numerical(0.0, 1.0, label="x")  # the stand-in calls scipy.stats.uniform, imported now
        assert 0.0 <= x.random() <= 1.0
        assert type(x.distribution).__module__.startswith("scipy.stats")
        normal = nni.mutable.Numerical(mu=0.0, sigma=1.0, label="n")
        assert abs(normal.distribution.mean()) < 1e-12
        import scipy.stats, pandas
        assert type(scipy.stats).__name__ == "module" and hasattr(scipy.stats, "ttest_ind")  # the real module
        assert pandas.DataFrame({"a": [1]}).shape == (1, 1)
        assert json_tricks.loads(json_tricks.dumps({"a": [1, 2.5]})) == {"a": [1, 2.5]}
        print("OK")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "AFTER_IMPORT True False False" in proc.stdout and "OK" in proc.stdout


def test_the_stand_in_is_skipped_when_nni_or_scipy_stats_is_already_imported():
    import subprocess
    import sys

    code = ("import sys, scipy.stats\nreal = scipy.stats\nfrom nni_bio.nas import _compat\n_compat.lean_trial()\n"
            "import nni.mutable.mutable as m\nassert sys.modules['scipy.stats'] is real and m.norm is real.norm\nprint('OK')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
