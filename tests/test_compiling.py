"""``--compile``: torch.compile'd training matches eager, rules with host state do not recompile per step, the
one-shot search compiles its supernet, a network with DFA layers is warned about, and inductor falls back to
aot_eager where it cannot build."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import Subset

import nni_bio
from nni_bio.data import get_dataset
from nni_bio.train.compiling import compile_model, usable_backend
from nni_bio.train.training import TrainConfig, train

# these tests compile networks with a DFA layer on purpose; the warning about it is tested once, below
pytestmark = pytest.mark.filterwarnings("ignore:.*read the output error from the error bus")

#: every layer on another rule, host state (brsf's step) and the error bus (dfa) included
RULES = ("brsf", "dfa", "kp", "usf")


def mixed_net() -> nn.Module:
    torch.manual_seed(0)
    conv1, conv2, fc1, fc2 = (nni_bio.get_rule(rule) for rule in RULES)
    return nn.Sequential(conv1.conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         conv2.conv2d(4, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         fc1.linear(8 * 16, 32), nn.ReLU(), fc2.linear(32, 10))


def digits(n: int = 256):
    return Subset(get_dataset("digits", "train"), range(n)), Subset(get_dataset("digits", "val"), range(64))


class CountingBackend:
    """A dynamo backend that counts the graphs it is handed (one per compile or recompile) and runs them eagerly."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, graph, example_inputs):
        self.graphs += 1
        return graph.forward


def test_compiled_training_matches_eager_on_every_rule():
    train_set, val_set = digits()
    eager, compiled = mixed_net(), mixed_net()
    config = TrainConfig(epochs=2, batch_size=32, lr=0.05)
    a = train(eager, train_set, val_set, config)
    b = train(compiled, train_set, val_set, TrainConfig(**{**config.__dict__, "compile": "aot_eager"}))
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)
    assert a.final.val_acc == pytest.approx(b.final.val_acc, abs=1 / 64)


def test_rules_with_host_state_do_not_recompile_per_step():
    """brSF's step counter and DFA's bus: the graphs compiled over 2 epochs are those of the first steps."""
    counts = []
    for steps in (4, 16):
        torch._dynamo.reset()
        backend = CountingBackend()
        net = mixed_net()
        nni_bio.enable_dfa(net)
        compiled = torch.compile(net, backend=backend)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
        for _ in range(steps):
            optimizer.zero_grad()
            nn.functional.cross_entropy(compiled(x), y).backward()
            optimizer.step()
        counts.append(backend.graphs)
    assert counts[0] == counts[1] and counts[0] <= 8, counts  # no graph per step; dfa's bus breaks the graph


def test_compile_model_stages_brsf_so_its_network_is_one_graph_equal_to_eager():
    import pickle

    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    brsf = nni_bio.get_rule("brsf")
    net = nn.Sequential(brsf.conv2d(1, 4, 3, padding=1), nn.ReLU(), brsf.conv2d(4, 4, 3, padding=1), nn.Flatten(),
                        brsf.linear(4 * 36, 3))
    twin = copy.deepcopy(net)
    compiled = compile_model(net, "aot_eager")
    x = torch.randn(2, 1, 6, 6)
    for _ in range(5):
        compiled(x).square().sum().backward()
        twin(x).square().sum().backward()
    for (name, p), q in zip(net.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)
    assert [m.feedback.step for m in net if hasattr(m, "feedback")] == [5, 5, 5]
    assert not counters["graph_break"] and counters["stats"]["unique_graphs"] == 1  # no break at the step counter
    assert not any("staged" in key for key in net.state_dict())
    assert all("staged" not in m.feedback._buffers for m in net if hasattr(m, "feedback"))  # dropped after each call
    again = pickle.loads(pickle.dumps(net))
    assert "staged" not in again[0].feedback._buffers
    plain = torch.compile(net, backend="aot_eager")  # no staging: brSF's step runs eagerly, never a stale draw
    plain(x).square().sum().backward()
    twin(x).square().sum().backward()
    assert net[0].feedback.step == twin[0].feedback.step == 6
    compiled.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), twin.eval()(x))


def test_the_one_shot_search_compiles_its_supernet():
    from nni_bio.strategies.oneshot import run_oneshot

    fast = dict(space_args={"width": 4, "rules": ["usf", "fa"]}, batch_size=32, train_limit=128, eval_derived=False)
    eager = run_oneshot("tiny", "darts", "digits", epochs=1, **fast)
    compiled = run_oneshot("tiny", "darts", "digits", epochs=1, compile="aot_eager", **fast)
    assert compiled.sample == eager.sample
    assert compiled.history[0].train_loss == pytest.approx(eager.history[0].train_loss, rel=1e-4)


def test_a_search_that_samples_a_path_per_step_refuses_to_compile():
    from nni_bio.core.errors import NniBioError
    from nni_bio.strategies.oneshot import run_oneshot

    with pytest.raises(NniBioError, match="enas samples one path per step"):
        run_oneshot("tiny", "enas", "digits", epochs=1, compile="aot_eager", space_args={"width": 4})


def test_compile_model_warns_that_dfa_layers_break_the_graph_and_only_then():
    with pytest.warns(UserWarning, match=r"1 layer\(s\) of this network read the output error .*slower compiled"):
        compile_model(mixed_net(), "aot_eager")
    without_dfa = nn.Sequential(nni_bio.get_rule("usf").linear(4, 3), nn.ReLU(), nni_bio.get_rule("brsf").linear(3, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compile_model(without_dfa, "aot_eager")


def test_inductor_falls_back_to_aot_eager_where_it_cannot_build(monkeypatch):
    real = torch.compile

    def no_inductor(model=None, *, backend="inductor", **kwargs):
        if backend == "inductor":
            def fail(*args, **kw):
                raise RuntimeError("no C++ compiler found")
            return fail
        return real(model, backend=backend, **kwargs)

    usable_backend.cache_clear()
    monkeypatch.setattr(torch, "compile", no_inductor)
    try:
        with pytest.warns(UserWarning, match="inductor backend cannot build.*no C\\+\\+ compiler.*aot_eager"):
            assert usable_backend("inductor") == "aot_eager"
    finally:
        usable_backend.cache_clear()
    with pytest.raises(ValueError, match="inductor, aot_eager"):
        usable_backend("tensorrt")


@pytest.mark.slow
def test_inductor_training_is_close_to_eager():
    """The generated kernels reorder float sums: close, not equal."""
    if usable_backend("inductor") != "inductor":
        pytest.skip("inductor cannot build here")
    net = mixed_net()
    reference = copy.deepcopy(net)
    nni_bio.enable_dfa(net), nni_bio.enable_dfa(reference)
    compiled = compile_model(net, "inductor")
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for model, module in ((compiled, net), (reference, reference)):
        optimizer = torch.optim.SGD(module.parameters(), lr=0.05)
        for _ in range(3):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    for (name, p), q in zip(net.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize("command", [
    ["train", "--model", "tiny-cnn", "--rule", "brsf", "--epochs", "1", "--train-limit", "128", "--no-progress"],
])
def test_nni_bio_train_compile(command, tmp_path):
    import json

    from nni_bio.cli import main

    assert main([*command, "--compile", "aot_eager", "--output", str(tmp_path / "run")]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "complete" and result["setup"]["config"]["compile"] == "aot_eager"


def test_the_trial_compiles(tmp_path):
    import json

    from nni_bio.trial import main

    sample = {"conv1": "conv_3x3", "conv2": "sep_conv_3x3@brsf", "fc": "usf"}
    assert main(["--space", "tiny", "--space-args", '{"width": 4, "rules": ["brsf", "usf"]}', "--sample", json.dumps(sample), "--epochs", "1",
                 "--train-limit", "64", "--batch-size", "32", "--compile", "aot_eager", "--output", str(tmp_path)]) == 0
