"""One-shot strategies on the tiny space: smoke searches, second-order DARTS on bio rules, the
supernet helpers, and the single-trial entry point outside NNI."""

import json

import pytest
import torch

from nni_bio.core.errors import NniBioError
from nni_bio.core.layers import RuleLayer
from nni_bio.search_spaces.tiny import TinySpace
from nni_bio.strategies.oneshot import STRATEGIES, make_strategy, run_oneshot
from nni_bio.strategies.supernet import build_supernet, exact_feedback, same_feedback_draw

TINY = {"width": 4, "rules": ["usf", "fa"]}
FAST = {"train_limit": 96, "batch_size": 32}
STRATEGY_ARGS = {"enas": {"batches_per_update": 1, "update_times": 1},
                 "egnas": {"population_size": 4, "generations": 1}}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_derives_a_valid_architecture_that_rebuilds(strategy):
    result = run_oneshot("tiny", strategy, "digits", epochs=1, space_args=TINY, **FAST,
                         **STRATEGY_ARGS.get(strategy, {}))
    space = TinySpace(**TINY)
    choices = {label: list(mutable.values) for label, mutable in space.simplify().items()}
    assert set(result.sample) == set(choices)
    assert all(result.sample[label] in values for label, values in choices.items())
    assert result.genotype["sample"] == result.sample
    net = TinySpace.build_network(result.genotype)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    record = result.final
    assert 0 <= record.val_acc <= 1 and record.epoch == 1 and record.sample == result.sample
    json.dumps(result.as_dict(), default=str)


def _arch_gradients(rules, unrolled, arch_gradient="rule"):
    torch.manual_seed(0)
    searcher, config = make_strategy("darts", unrolled=unrolled, arch_gradient=arch_gradient, epochs=1,
                                     batch_size=16)
    from nni_bio.strategies.oneshot.search import Search

    supernet = build_supernet(TinySpace(width=4, rules=rules), "mixture")
    data = torch.utils.data.TensorDataset(torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,)))
    search = Search(supernet, config, data, data, data)
    searcher.setup(search)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    search.weight_step(x, y)  # fills the momentum buffers the unrolled step uses
    searcher.arch_step(x, y, *search.next_arch_batch())
    return [a.grad.clone() for a in supernet.arch_parameters()], supernet


def test_second_order_darts_runs_on_bio_rules_and_differs_from_first_order():
    rules = ["usf", "fa", "kp", "brsf"]
    second, supernet = _arch_gradients(rules, unrolled=True)
    first, _ = _arch_gradients(rules, unrolled=False)
    assert {m.rule_name for m in supernet.model.modules() if isinstance(m, RuleLayer)} == set(rules)
    assert all(torch.isfinite(g).all() for g in second)
    assert any(not torch.allclose(a, b) for a, b in zip(first, second))  # the Hessian term is there


def test_bp_view_changes_the_architecture_gradient_and_keeps_rule_state():
    rule_grads, supernet = _arch_gradients(["fa"], unrolled=False)
    bp_grads, _ = _arch_gradients(["fa"], unrolled=False, arch_gradient="bp")
    assert any(not torch.allclose(a, b) for a, b in zip(rule_grads, bp_grads))
    layer = next(m for m in supernet.model.modules() if isinstance(m, RuleLayer))
    before = layer.feedback
    with exact_feedback(supernet.model):
        assert layer.feedback is not before and layer.feedback.exact
    assert layer.feedback is before and layer.rule_name == "fa"


def test_architecture_forwards_keep_the_brsf_draw():
    from nni_bio import get_rule

    net = torch.nn.Sequential(torch.nn.Flatten(), get_rule("brsf").linear(64, 10))
    x = torch.randn(4, 1, 8, 8, requires_grad=True)
    net(x).sum().backward()
    step = int(net[1].feedback.step)
    with same_feedback_draw(net):
        net(x).sum().backward()
    assert int(net[1].feedback.step) == step and net[1].training
    net(x).sum().backward()
    assert int(net[1].feedback.step) == step + 1


def test_discretized_supernet_computes_the_derived_path_exactly():
    supernet = build_supernet(TinySpace(width=4, rules=["usf", "fa"]), "mixture")
    sample = {"conv1": "conv_5x5", "conv2": "skip_connect", "fc": "usf"}
    model = supernet.model.eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad(), supernet.discretized(sample):
        mixed = model(x)
        h = torch.relu(model.bn1(model.conv1.candidates["conv_5x5"](x)))
        h = torch.relu(model.bn2(h))
        direct = model.fc.candidates["usf"](torch.nn.functional.avg_pool2d(h, 2).flatten(1))
    assert torch.allclose(mixed, direct, atol=1e-5)
    assert supernet.probs()["fc"]["usf"] == pytest.approx(0.5, abs=0.01)  # logits restored


def test_cell_derivation_follows_the_darts_rule():
    darts = pytest.importorskip("nni_bio.search_spaces.darts")
    supernet = build_supernet(darts.DartsSpace(width=4, num_cells=3, rules=["usf"], in_channels=1), "mixture")
    torch.manual_seed(1)
    supernet.set_alpha_vector(torch.randn_like(supernet.alpha_vector()))
    assert supernet.derive() == darts.sample_from_edge_weights(supernet.probs())


def test_unknown_strategy_and_hyperparameter_are_named():
    with pytest.raises(NniBioError, match="Did you mean 'darts'"):
        make_strategy("dart")
    with pytest.raises(NniBioError, match="arch_lrr.*arch_lr"):
        make_strategy("darts", arch_lrr=0.1)
    with pytest.raises(NniBioError, match="population_size"):
        make_strategy("darts", population_size=3)


def _reported(monkeypatch):
    import nni

    reported = {"intermediate": [], "final": []}
    monkeypatch.setattr(nni, "report_intermediate_result", reported["intermediate"].append)
    monkeypatch.setattr(nni, "report_final_result", reported["final"].append)
    return reported


def test_single_trial_entry_point_outside_nni_writes_the_genotype(tmp_path, capsys, monkeypatch):
    from nni_bio.strategies.oneshot.trial import main

    reported = _reported(monkeypatch)
    assert main(["--strategy", "darts", "--space", "tiny", "--space-args", json.dumps(TINY), "--dataset", "digits",
                 "--epochs", "1", "--train-limit", "96", "--batch-size", "32", "--output", str(tmp_path)]) == 0
    genotype = json.loads((tmp_path / "genotype.json").read_text())
    assert genotype["space"] == "tiny" and set(genotype["sample"]) == {"conv1", "conv2", "fc"}
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["strategy"] == "darts" and result["sample"] == genotype["sample"]
    assert any((tmp_path / "tensorboard").iterdir())
    out = capsys.readouterr().out
    assert "derived architecture" in out
    # tiny on digits is cheap: the derived architecture is retrained by default, and that is the final default
    (final,) = reported["final"]
    assert final["default_metric"] == "retrained_val_acc" and final["retrain_epochs"] == 5
    assert final["default"] == final["retrained_val_acc"] == result["retrain"]["history"][-1]["val_acc"]
    assert len(result["retrain"]["history"]) == 5
    # the supernet's number is kept, under its own name, never as an unlabelled validation accuracy
    (epoch,) = reported["intermediate"]
    assert final["supernet_val_acc"] == epoch["supernet_val_acc"] == result["history"][-1]["val_acc"]
    assert "best_val_acc" not in final and "val_loss" not in epoch and "supernet_val_loss" in epoch
    assert "retrained from scratch for 5 epochs (the final default metric)" in out and "supernet" in out


def test_without_retraining_the_default_is_the_derived_architecture_with_shared_weights(tmp_path, monkeypatch):
    from nni_bio.strategies.oneshot.trial import main

    reported = _reported(monkeypatch)
    assert main(["--strategy", "darts", "--space", "tiny", "--space-args", json.dumps(TINY), "--epochs", "1",
                 "--train-limit", "96", "--batch-size", "32", "--retrain-epochs", "0", "--output", str(tmp_path)]) == 0
    (final,) = reported["final"]
    assert final["default_metric"] == "derived_val_acc" and final["default"] == final["derived_val_acc"]
    assert "retrained_val_acc" not in final and "supernet_val_acc" in final
    assert json.loads((tmp_path / "result.json").read_text())["retrain"] is None


def test_retraining_is_default_only_where_cheap_and_final_metrics_fall_back_honestly():
    from types import SimpleNamespace

    from nni_bio.strategies.oneshot.trial import describe_final, final_metrics
    from nni_bio.strategies.oneshot import default_retrain_epochs

    assert default_retrain_epochs("tiny", "digits") > 0
    assert default_retrain_epochs("darts", "cifar10") == 0 and default_retrain_epochs("nb201", "digits") == 0
    record = SimpleNamespace(val_acc=0.98, derived_val_acc=float("nan"), epoch=1)
    result = SimpleNamespace(history=[record], final=record, strategy="darts", sample={"fc": "usf"})
    final = final_metrics(result, None, 0)  # eval_derived=False: only the supernet was measured
    assert final["default_metric"] == "supernet_val_acc" and final["default"] == 0.98
    assert "not of a trained architecture" in describe_final(final)[0]
    retrained = SimpleNamespace(final=SimpleNamespace(val_acc=0.5))
    final = final_metrics(result, retrained, 3)
    assert final["default"] == 0.5 and final["supernet_val_acc"] == 0.98
    lines = describe_final(final)
    assert "retrained from scratch for 3 epochs" in lines[0] and "0.9800" in lines[-1] and "supernet" in lines[-1]


def test_entry_point_refuses_a_strategy_conflicting_with_the_nni_parameter(tmp_path, monkeypatch, capsys):
    import nni_bio.strategies.oneshot.trial as entry

    monkeypatch.setattr(entry, "nni_parameters", lambda: {"strategy": "enas"})
    assert entry.main(["--strategy", "darts", "--space", "tiny", "--output", str(tmp_path)]) == 2
    assert "disagrees" in capsys.readouterr().err


def test_hard_gumbel_sends_no_error_to_unchosen_candidates():
    from nni_bio.strategies.supernet import set_gumbel

    supernet = build_supernet(TinySpace(width=4, rules=["usf", "fa"]), "gumbel")
    set_gumbel(supernet.model, tau=1.0, hard=True)
    supernet.model(torch.randn(8, 1, 8, 8)).square().sum().backward()
    grads = {name: c.weight.grad.abs().sum().item() for name, c in supernet.model.fc.named_children()
             if hasattr(c, "weight")}
    assert sorted(grads.values())[0] == 0.0 and sorted(grads.values())[1] > 0


EXAMPLES = sorted((__import__("pathlib").Path(__file__).resolve().parent.parent / "examples").glob("*.yml"))


@pytest.mark.parametrize("path", [p for p in EXAMPLES if "nni_bio.strategies.oneshot.trial" in p.read_text()], ids=lambda p: p.name)
def test_oneshot_example_commands_name_valid_strategy_arguments(path):
    import shlex

    import yaml

    from nni_bio.strategies.oneshot.trial import parse_args, resolve

    config = yaml.safe_load(path.read_text())
    words = shlex.split(config["trialCommand"])
    assert words[:3] == ["python3", "-m", "nni_bio.strategies.oneshot.trial"] and config["maxTrialNumber"] == 1
    (strategy_name,) = config["searchSpace"]["strategy"]["_value"]
    strategy, hparams = resolve(parse_args(words[3:]), {"strategy": strategy_name})
    make_strategy(strategy, **hparams)  # unknown or misspelled arguments raise


def test_python_example_runs():
    import importlib.util

    path = EXAMPLES[0].parent / "python_oneshot.py"
    spec = importlib.util.spec_from_file_location("python_oneshot", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        out = module.main(["--strategy", "egnas", "--epochs", "1", "--retrain-epochs", "1"])
    finally:
        torch.set_num_threads(threads)
    assert set(out["sample"]) == {"conv1", "conv2", "fc"} and 0 <= out["retrained_val_acc"] <= 1
