"""The nnictl launcher's pieces that need no running experiment."""

import json
import math
import shlex

import pytest
import yaml

from nni_bio.launch.experiment import best_trial, decode_trial
from nni_bio.launch.experiment_config import ExperimentError, load_config
from nni_bio.nas.candidates import unwrap_choice


def rest_trial(trial_id, status, params, final=None):
    raw = {"trialJobId": trial_id, "status": status,
           "hyperParameters": [json.dumps({"parameter_id": 0, "parameter_source": "algorithm", "parameters": params})]}
    if final is not None:
        raw["finalMetricData"] = [{"data": json.dumps(json.dumps(final))}]
    return raw


def test_decode_trial_unwraps_nni_json_in_json():
    trial = decode_trial(rest_trial("a", "SUCCEEDED", {"fc": "usf"}, {"default": 0.9, "val_loss": 0.3}))
    assert trial.parameters == {"fc": "usf"} and trial.score == 0.9


def test_best_trial_ignores_failed_and_unscored():
    trials = [decode_trial(rest_trial("a", "SUCCEEDED", {}, {"default": 0.5})),
              decode_trial(rest_trial("b", "FAILED", {}, {"default": 0.99})),
              decode_trial(rest_trial("c", "SUCCEEDED", {}, 0.7)),
              decode_trial(rest_trial("d", "RUNNING", {}))]
    assert best_trial(trials).id == "c"
    assert best_trial(trials[1:2]) is None


def test_unwrap_choice_handles_both_tuner_formats():
    assert unwrap_choice({"_value": "conv_3x3@fa", "_idx": 1}) == "conv_3x3@fa"
    assert unwrap_choice("fa") == "fa"


def test_shipped_digits_config_is_valid():
    config = load_config("examples/digits.yml")
    assert "nni_bio.trial" in config["trialCommand"]


@pytest.mark.parametrize("text, message", [
    ("[1, 2", "not valid YAML"),
    ("- a list", "YAML mapping"),
    ("trialCommand: x\ntuner: {name: TPE}", "trainingService"),
    ("trialCommand: x\ntuner: {name: TPE}\ntrainingService: {platform: local}\nsearchSpaceFile: nope.json", "nope.json"),
])
def test_malformed_configs_fail_early_with_the_reason(tmp_path, text, message):
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ExperimentError, match=message):
        load_config(path)


def test_missing_config_is_named():
    with pytest.raises(ExperimentError, match="missing.yml"):
        load_config("missing.yml")


# -- the search space a config offers is the one its trials build --------------------------------------

def _config(tmp_path, rules_in_command, rules_in_file, *, tuner="RegularizedEvolutionTuner", fmt="nas"):
    from nni_bio.search_spaces import space_json

    space_args = json.dumps({"width": 4, "rules": rules_in_command})
    (tmp_path / "space.json").write_text(json.dumps(space_json("tiny", "digits", {"width": 4, "rules": rules_in_file},
                                                               fmt)))
    path = tmp_path / "search.yml"
    path.write_text(yaml.safe_dump({
        "searchSpaceFile": "space.json", "tuner": {"name": tuner}, "trainingService": {"platform": "local"},
        "trialCommand": "OMP_NUM_THREADS=1 python3 -m nni_bio.trial --space tiny --dataset digits --space-args "
                        + shlex.quote(space_args)}))
    return path


def test_a_search_space_file_made_for_other_rules_is_refused_with_the_command_that_fixes_it(tmp_path, capsys):
    from nni_bio.cli import main
    from nni_bio.launch.experiment_config import check_search_space

    path = _config(tmp_path, ["usf", "fa", "kp"], ["usf", "fa"])
    with pytest.raises(ExperimentError, match="nni-bio export-space") as caught:
        check_search_space(path)
    message = str(caught.value)
    assert "fc: candidates differ (the trial builds ['kp'] too)" in message
    command = next(line.strip() for line in message.splitlines() if line.strip().startswith("nni-bio export-space"))
    assert "--space-args '{\"width\": 4, \"rules\": [\"usf\", \"fa\", \"kp\"]}' --format nas" in command
    assert main(shlex.split(command)[1:]) == 0  # the command as printed regenerates the file
    assert check_search_space(path) == "ok"


def test_update_space_rewrites_a_stale_file_and_a_wrong_format_is_caught(tmp_path):
    from nni_bio.launch.experiment_config import check_search_space

    path = _config(tmp_path, ["usf", "fa"], ["usf"])
    assert check_search_space(path, update=True) == "updated"
    assert check_search_space(path) == "ok"
    path = _config(tmp_path, ["usf", "fa"], ["usf", "fa"], fmt="choice")  # RegularizedEvolutionTuner reads "nas"
    with pytest.raises(ExperimentError, match="(?s)_type 'choice'.*'layer_choice'.*--format nas"):
        check_search_space(path)
    path = _config(tmp_path, ["usf", "fa"], ["usf", "fa"], tuner="TPE", fmt="choice")
    assert check_search_space(path) == "ok"


def test_a_rule_that_is_not_installed_is_named_before_launching(tmp_path):
    from nni_bio.launch.experiment_config import check_search_space

    path = _config(tmp_path, ["usf"], ["usf"])
    path.write_text(path.read_text().replace('"usf"]', '"usf", "no_such_rule"]'))
    with pytest.raises(ExperimentError, match="(?s)cannot be built here.*no_such_rule.*nni-bio rules"):
        check_search_space(path)


def test_nni_bio_search_refuses_a_stale_space_before_starting_nni(tmp_path, monkeypatch, capsys):
    from nni_bio.launch import experiment as ex
    from nni_bio.cli import main

    monkeypatch.setattr(ex, "create", lambda *a, **k: pytest.fail("nnictl was started"))
    assert main(["search", str(_config(tmp_path, ["usf", "fa"], ["usf"]))]) == 2
    assert "--update-space" in capsys.readouterr().err


def test_search_reports_what_a_one_shot_trial_s_number_is(monkeypatch, capsys):
    import argparse
    from types import SimpleNamespace

    from nni_bio.launch import experiment as ex
    from nni_bio.commands import search
    from nni_bio.strategies.oneshot.trial import final_metrics

    record = SimpleNamespace(val_acc=0.98, derived_val_acc=0.2425, epoch=15)
    result = SimpleNamespace(history=[record], final=record, strategy="darts",
                             sample={"conv1": "conv_3x3", "conv2": "skip_connect", "fc": "usf"})
    final = final_metrics(result, SimpleNamespace(final=SimpleNamespace(val_acc=0.9125)), 5)
    trial = decode_trial(rest_trial("t1", "SUCCEEDED", {"strategy": "darts"}, final))
    monkeypatch.setattr(ex, "create", lambda *a, **k: None)
    monkeypatch.setattr(ex, "RestClient", lambda port: SimpleNamespace(experiment_id=lambda: "exp1"))
    monkeypatch.setattr(ex, "wait", lambda *a, **k: [trial])
    args = argparse.Namespace(config="examples/digits-darts.yml", port=1, timeout=1, stop_when_done=False,
                              no_progress=True)
    assert search.run(args) == 0
    out = capsys.readouterr().out
    assert trial.score == 0.9125
    assert ("best trial t1: 0.9125 = validation accuracy of the derived architecture retrained from scratch for 5 "
            "epochs") in out
    assert "shared weights: 0.2425" in out and "supernet as the search evaluates it (last epoch): 0.9800" in out
    assert "validation accuracy 0.98" not in out


# -- following long experiments (issue 9 item 6) -------------------------------------------------------------

def metric_record(trial_id, sequence, data, kind="PERIODICAL"):
    """A record of NNI's ``GET metric-data/ID``: the reported value as JSON in JSON."""
    return {"timestamp": 1700000000000 + sequence, "trialJobId": trial_id, "parameterId": "0", "type": kind,
            "sequence": sequence, "data": json.dumps(json.dumps(data))}


def epoch_metrics(supernet, derived):
    return {"default": supernet, "supernet_val_acc": supernet, "derived_val_acc": derived, "supernet_val_loss": 0.5}


def test_one_shot_progress_is_built_from_intermediate_results():
    from nni_bio.launch.experiment import oneshot_progress

    records = [metric_record("t1", 2, epoch_metrics(0.81, 0.70)), metric_record("t1", 0, epoch_metrics(0.5, 0.4)),
               metric_record("t1", 1, epoch_metrics(0.7, 0.6)), metric_record("t1", 0, {"default": 0.9}, "FINAL")]
    sample = {"fc": "usf", "conv1": "conv_3x3", "conv2": "skip_connect"}
    assert oneshot_progress("t1", records, 15, sample) == (
        "trial t1: epoch 3/15 | supernet val acc 0.8100 | derived architecture (shared weights) val acc 0.7000 | "
        "derived: conv1=conv_3x3 conv2=skip_connect fc=usf")
    # a trial that reports its derived architecture with each epoch: that one wins
    records.append(metric_record("t1", 3, {**epoch_metrics(0.82, 0.71), "sample": json.dumps({"fc": "fa"})}))
    assert oneshot_progress("t1", records, 15, sample).endswith("epoch 4/15 | supernet val acc 0.8200 | derived "
                                                                 "architecture (shared weights) val acc 0.7100 | "
                                                                 "derived: fc=fa")
    assert oneshot_progress("t1", [], 15) == "trial t1: epoch 0/15 (no search epoch finished yet)"
    assert oneshot_progress("t2", [metric_record("t2", 0, 0.25)], 2) == "trial t2: epoch 1/2 | supernet val acc 0.2500"


def test_the_derived_architecture_is_read_from_a_one_shot_trial_s_output():
    from nni_bio.launch.experiment import format_sample, sample_from_log

    log = "\n".join([
        "one-shot search: strategy darts, space tiny, data set digits, 2 epochs, {}; then no retraining",
        'epoch 0: supernet train loss 2.0 acc 0.2 | supernet val loss 2.0 acc 0.3 | derived architecture, shared '
        'weights: val acc 0.2000 | 1.0 s | {"conv1": "max_pool", "fc": "fa"}',
        'epoch 1: supernet train loss 1.0 acc 0.5 | supernet val loss 1.0 acc 0.6 | derived architecture, shared '
        'weights: val acc 0.5000 | 1.0 s | {"conv1": "conv_3x3", "fc": "usf"}',
        "retrain epoch 1: train loss 0.5 acc 0.8 | val loss 0.5 acc 0.8 | {}",
    ])
    assert sample_from_log(log) == {"conv1": "conv_3x3", "fc": "usf"}
    # NNI 3 keeps a local trial's prints in trial.log, time-stamped
    nni_log = ('[2026-11-30 05:06:54] PRINT one-shot search: strategy darts\n[2026-11-30 05:06:56] PRINT epoch 1: '
               'supernet train loss 2.3 acc 0.04 | derived architecture, shared weights: val acc 0.1 | 1.1 s | '
               '{"conv1": "conv_5x5", "fc": "frsf"}\n[2026-11-30 05:06:57] INFO (nni) something else\n')
    assert sample_from_log(nni_log) == {"conv1": "conv_5x5", "fc": "frsf"}
    assert sample_from_log("nothing yet") is None
    many = {f"cell{i:02d}": "sep_conv_3x3@fa" for i in range(20)}
    assert format_sample(many, limit=3) == "cell00=sep_conv_3x3@fa cell01=sep_conv_3x3@fa cell02=sep_conv_3x3@fa " \
                                           "(+17 more)"


def test_the_epochs_of_a_one_shot_config_come_from_its_trial_command():
    from nni_bio.launch.experiment import oneshot_epochs

    assert oneshot_epochs(load_config("examples/digits-darts.yml")["trialCommand"]) == 15
    assert oneshot_epochs(load_config("examples/digits.yml")["trialCommand"]) is None
    assert oneshot_epochs("python3 train.py") is None


class FakeClient:
    """NNI's REST API for one one-shot trial that runs ``epochs`` epochs, one per poll."""

    base = "http://127.0.0.1:1/api/v1/nni"

    def __init__(self, epochs, failures=0):
        self.epochs, self.polls, self.failures = epochs, 0, failures

    def status(self):
        if self.failures:
            self.failures -= 1
            raise OSError("connection refused")
        self.polls += 1
        return {"status": "DONE" if self.polls > self.epochs else "RUNNING"}

    def trials(self):
        done = self.polls > self.epochs
        final = {"default": 0.9, "sample": json.dumps({"fc": "usf"})} if done else None
        return [decode_trial(rest_trial("t1", "SUCCEEDED" if done else "RUNNING", {"strategy": "darts"}, final))]

    def metrics(self, trial_id):
        return [metric_record(trial_id, k, epoch_metrics(0.5 + k / 10, 0.4)) for k in range(min(self.polls,
                                                                                                 self.epochs))]

    def trial_file(self, trial_id, name="stdout"):
        return "".join(f"epoch {k}: supernet ... | {json.dumps({'fc': ['fa', 'usf'][k % 2]})}\n"
                       for k in range(min(self.polls, self.epochs)))


def fake_clock(monkeypatch, step):
    """time.monotonic jumps by ``step`` seconds at every sleep."""
    from nni_bio.launch import experiment as ex

    now = [0.0]
    monkeypatch.setattr(ex.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(ex.time, "sleep", lambda seconds: now.__setitem__(0, now[0] + step))


def test_wait_shows_a_one_shot_experiment_s_epochs_not_trials(monkeypatch, capsys):
    from nni_bio.launch.experiment import wait

    fake_clock(monkeypatch, 1.0)
    trials = wait(FakeClient(3), 1, None, progress=True, epochs=3, read_stdout=True)
    assert [t.status for t in trials] == ["SUCCEEDED"]
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("trial t1")]
    assert lines == ["trial t1: epoch 1/3 | supernet val acc 0.5000 | derived architecture (shared weights) val acc "
                     "0.4000 | derived: fc=fa",
                     "trial t1: epoch 2/3 | supernet val acc 0.6000 | derived architecture (shared weights) val acc "
                     "0.4000 | derived: fc=usf",
                     "trial t1: epoch 3/3 | supernet val acc 0.7000 | derived architecture (shared weights) val acc "
                     "0.4000 | derived: fc=fa"]
    assert "3/3" in captured.err and "epoch" in captured.err and "0/1" not in captured.err  # the bar counts epochs


def test_search_follows_until_the_end_with_no_default_timeout(monkeypatch):
    from nni_bio.cli import build_parser
    from nni_bio.launch.experiment import wait

    assert build_parser().parse_args(["search", "examples/digits.yml"]).timeout is None
    fake_clock(monkeypatch, 86400.0)  # a day per poll
    assert wait(FakeClient(5), 1, None, progress=False)[0].status == "SUCCEEDED"
    fake_clock(monkeypatch, 86400.0)
    assert wait(FakeClient(5), 1, math.inf, progress=False)[0].status == "SUCCEEDED"  # as nni-bio study calls it
    fake_clock(monkeypatch, 86400.0)
    with pytest.raises(ExperimentError, match="still running after 172800 s"):
        wait(FakeClient(5), 1, 2 * 86400, progress=False)


def test_wait_rides_out_a_manager_that_is_briefly_unreachable(monkeypatch):
    from nni_bio.launch import experiment as ex

    fake_clock(monkeypatch, ex.POLL_SECONDS)
    assert ex.wait(FakeClient(2, failures=5), 1, None, progress=False)[0].status == "SUCCEEDED"
    fake_clock(monkeypatch, ex.POLL_SECONDS)
    with pytest.raises(ExperimentError, match="has not answered for 120 s"):
        ex.wait(FakeClient(2, failures=10**6), 1, None, progress=False)


def write_nni_records(home, **records):
    folder = home / "nni-experiments"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".experiment").write_text(json.dumps(records))


def test_attach_finds_the_manager_or_says_why_it_cannot(tmp_path, monkeypatch, capsys):
    from nni_bio.launch import experiment as ex
    from nni_bio.cli import main

    monkeypatch.setenv("HOME", str(tmp_path))
    write_nni_records(tmp_path, old1={"id": "old1", "port": 1, "status": "STOPPED", "experimentName": "old"},
                      run2={"id": "run2", "port": 9, "status": "RUNNING", "experimentName": "digits"},
                      gone={"id": "gone", "port": "N/A", "status": "STOPPED"})
    assert main(["search", "--attach", "nope"]) == 2
    assert "NNI knows no experiment 'nope'" in (err := capsys.readouterr().err) and "running: run2 (digits, port 9)" \
        in err
    assert main(["search", "--attach", "gone"]) == 2
    assert "`nnictl resume gone`" in capsys.readouterr().err
    monkeypatch.setattr(ex.RestClient, "profile", lambda self: (_ for _ in ()).throw(OSError("refused")))
    assert main(["search", "--attach", "old1"]) == 2
    assert "experiment old1 is not running" in (err := capsys.readouterr().err) and "nothing answers on port 1" in err
    assert main(["search", "--attach", "old1", "examples/digits.yml"]) == 2
    assert "neither CONFIG nor --port" in capsys.readouterr().err


def test_search_attach_prints_the_best_architecture(tmp_path, monkeypatch, capsys):
    from nni_bio.launch import experiment as ex
    from nni_bio.cli import main

    profile = {"id": "abc", "logDir": str(tmp_path), "params": {
        "experimentName": "digits", "maxTrialNumber": 2, "trainingService": {"platform": "local"},
        "trialCommand": "python3 -m nni_bio.trial --space tiny --dataset digits"}}
    monkeypatch.setattr(ex, "attach", lambda exp_id: (object(), 4321, profile))
    seen = {}

    def wait(client, max_trials, timeout, progress=True, **kwargs):
        seen.update(max_trials=max_trials, timeout=timeout, **kwargs)
        return [decode_trial(rest_trial("a", "SUCCEEDED", {"fc": "usf", "conv1": "conv_3x3", "conv2": "conv_3x3@fa"},
                                        {"default": 0.75})),
                decode_trial(rest_trial("b", "FAILED", {"fc": "fa", "conv1": "max_pool"}))]

    monkeypatch.setattr(ex, "wait", wait)
    assert main(["search", "--attach", "abc", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "attached to experiment abc: digits" in out and "nni-bio search --attach abc" in out
    assert "2 trials: 1 succeeded, 1 failed" in out and "best trial a: validation accuracy 0.7500" in out
    assert "conv1                    conv_3x3 @ exact local gradient" in out  # the first weight layer
    assert "conv2                    conv_3x3 @ fa" in out and "fc                       usf" in out
    assert seen == {"max_trials": 2, "timeout": None, "epochs": None, "read_stdout": True}


SIGHUP_SCRIPT = """
import os, signal, sys, time
from nni_bio.commands.search import survive_hangup
restore = survive_hangup(sys.argv[1])
print("before", flush=True)
os.kill(os.getpid(), signal.SIGHUP)
time.sleep(0.2)
print("still following after the hangup", flush=True)
print("and stderr too", file=sys.stderr, flush=True)
restore()
"""


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGHUP"), reason="no SIGHUP on this system")
def test_the_follower_survives_its_terminal_closing(tmp_path):
    import subprocess
    import sys

    log = tmp_path / "follow.log"
    import signal

    done = subprocess.run([sys.executable, "-c", SIGHUP_SCRIPT, str(log)], capture_output=True, text=True,
                          timeout=120, preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))  # not nohup'd
    assert done.returncode == 0, done.stderr  # SIGHUP's default action would have killed it (-1)
    assert done.stdout == "before\n"
    text = log.read_text()
    assert "terminal closed (SIGHUP)" in text and "still following after the hangup" in text
    assert "and stderr too" in text


@pytest.mark.slow
def test_attach_follows_a_running_one_shot_experiment_to_its_best_architecture(tmp_path, monkeypatch, capsys):
    """A real nnictl experiment (one-shot DARTS, 2 tiny epochs) launched elsewhere; `nni-bio search --attach ID`
    finds its port in NNI's records, shows its epochs from the intermediate results and prints the derived
    architecture. About a minute on 2 busy cores."""
    import random
    import shutil
    import sys
    from pathlib import Path

    from nni_bio.launch import experiment as ex
    from nni_bio.cli import main

    if not ((Path(sys.executable).parent / "nnictl").exists() or shutil.which("nnictl")):
        pytest.skip("nnictl is not installed")
    root = Path(__file__).resolve().parent.parent
    monkeypatch.setenv("HOME", str(tmp_path))  # NNI's experiment records (~/nni-experiments/.experiment) too
    config = yaml.safe_load((root / "examples" / "digits-darts.yml").read_text())
    config.update(experimentName="nni-bio attach test", trialCodeDirectory=str(root), maxExperimentDuration="5m",
                  experimentWorkingDirectory=str(tmp_path / "experiments"),
                  trialCommand="OMP_NUM_THREADS=1 python3 -m nni_bio.strategies.oneshot.trial --space tiny --dataset digits --epochs 2 "
                               "--retrain-epochs 1 --threads 1 --batch-size 32 --train-limit 256 --arch-lr 0.01")
    path = tmp_path / "darts.yml"
    path.write_text(yaml.safe_dump(config))
    from nni_bio.strategies.multi_trial import free_port

    port = free_port(random.randrange(20000, 40000))
    ex.create(path, port)
    exp_id = ex.RestClient(port).experiment_id()
    try:
        assert main(["search", "--attach", exp_id, "--stop-when-done"]) == 0
        captured = capsys.readouterr()
        out = captured.out
        assert f"attached to experiment {exp_id}: nni-bio attach test" in out
        epochs = [line for line in out.splitlines() if line.startswith("trial ") and " epoch " in line]
        assert epochs and epochs[-1].split(": ", 1)[1].startswith("epoch 2/2 | supernet val acc"), out
        assert "derived: conv1=" in epochs[-1], out  # the current derived architecture, from the trial's stdout
        assert "0/1" not in captured.err
        assert "1 trials: 1 succeeded, 0 failed" in out and "derived by one-shot strategy darts" in out
        assert "architecture (slot: op @ learning rule):" in out and f"experiment {exp_id} stopped" in out
    finally:
        ex.stop(exp_id)


def test_the_follower_reports_a_lost_remote_worker_from_the_managers_log(tmp_path, monkeypatch, capsys):
    """NNI 3.0 cancels a lost worker's trials and waits for ever; only nnimanager.log says why."""
    from nni_bio.launch import experiment
    from nni_bio.launch.experiment import ExperimentError, ManagerLog, wait

    monkeypatch.setattr(experiment, "STALLED_AFTER", 0.0)
    log_file = tmp_path / "exp1" / "log" / "nnimanager.log"
    log_file.parent.mkdir(parents=True)
    log_file.write_text("[INFO] started\n")

    class Client:
        base = "fake"
        polls = 0
        running = True  # another worker still runs a trial

        def get(self, endpoint):
            assert endpoint == "experiment"
            return {"id": "exp1", "params": {"experimentWorkingDirectory": str(tmp_path)}}

        def status(self):
            self.polls += 1
            if self.polls == 3:
                with log_file.open("a") as f:
                    f.write("[ERROR] (RemoteV3) Failed to recover worker 10.0.0.7: Error: connect ECONNREFUSED\n")
            if self.polls == 6:
                self.running = False  # ... until it ends and no worker is left
            return {"status": "RUNNING"}

        def trials(self):
            return [experiment.Trial("t1", "RUNNING" if self.running else "SUCCEEDED", {}, None)]

    client = Client()
    with pytest.raises(ExperimentError, match="lost a remote worker and runs no trial.*10.0.0.7.*nnictl resume exp1"):
        wait(client, 2, None, progress=False, poll=0)
    assert client.polls == 6  # warned at poll 3, went on while a trial ran, gave up once none did
    assert capsys.readouterr().err.count("warning: NNI lost a remote worker") == 1
    assert ManagerLog(None).check() == []
