"""Plugin discovery through the ``nni_bio.rules`` entry-point group, with fake distributions (no pip)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import nni_bio
from nni_bio.cli import main as cli
from nni_bio.core import _registry
from nni_bio.core.errors import IncompatiblePluginError, PluginLoadError, RuleCollisionError
from nni_bio.testing import check_rule

FakeDistribution = Callable[..., Path]  # the fake_distribution fixture of conftest.py

BUILTINS = ["backprop", "brsf", "dfa", "fa", "frsf", "kp", "usf"]


def rule_module(name: str, *, api_version: int | None = 1, preamble: str = "") -> str:
    """Source of a plugin module defining ``Rule``: backprop through the generic Function (B = W).

    ``api_version=None`` leaves ``api_version`` out of the RuleInfo."""
    version = f", api_version={api_version}" if api_version is not None else ""
    return f"""
{preamble}
from nni_bio.core.rule import Feedback, LearningRule, RuleInfo


class TransposeFeedback(Feedback):
    def feedback_weight(self, weight, training):
        return weight.detach()


class Rule(LearningRule):
    info = RuleInfo(name={name!r}, family="feedback", summary="fake plugin rule"{version})

    def feedback(self, layer):
        return TransposeFeedback()
"""


RECORD_IMPORT = "import pathlib; pathlib.Path(__file__).with_suffix('.imported').touch()"


@pytest.fixture
def fake_plugin(fake_distribution: FakeDistribution) -> Path:
    """nni-bio-fake 1.0 providing rule ``fake_rule``; its module records being imported."""
    return fake_distribution("nni-bio-fake", rules={"fake_rule": "plugin_fake:Rule"},
                             modules={"plugin_fake": rule_module("fake_rule", preamble=RECORD_IMPORT)})


def test_plugin_is_listed_without_importing_it(fake_plugin: Path) -> None:
    assert "fake_rule" in nni_bio.list_rules()
    assert nni_bio.is_rule("fake_rule")
    source = nni_bio.rule_sources()["fake_rule"]
    assert (source.distribution, source.version, source.value) == ("nni-bio-fake", "1.0", "plugin_fake:Rule")
    assert "plugin_fake" not in sys.modules
    assert not (fake_plugin / "plugin_fake.imported").exists()


def test_plugin_is_usable_through_get_rule(fake_plugin: Path) -> None:
    rule = nni_bio.get_rule("fake_rule")
    assert (fake_plugin / "plugin_fake.imported").exists()
    assert type(rule).__module__ == "plugin_fake" and rule.info.name == "fake_rule"
    layer = rule.linear(4, 3)
    x = torch.randn(2, 4, requires_grad=True)
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(2, 3) @ layer.weight.detach())


def test_listing_does_not_run_a_failing_plugin(fake_distribution: FakeDistribution) -> None:
    fake_distribution("nni-bio-explosive", rules={"explosive": "plugin_explosive:Rule"},
                      modules={"plugin_explosive": "raise RuntimeError('imported during listing')\n"})
    assert "explosive" in nni_bio.list_rules()
    with pytest.raises(PluginLoadError) as info:
        nni_bio.get_rule("explosive")
    assert isinstance(info.value.__cause__, RuntimeError)


def two_providers_of_twin(fake_distribution: FakeDistribution) -> None:
    for dist, module in (("nni-bio-alpha", "plugin_alpha"), ("nni-bio-beta", "plugin_beta")):
        fake_distribution(dist, rules={"twin": f"{module}:Rule"}, modules={module: rule_module("twin")})


def test_two_distributions_offering_one_name_collide(fake_distribution: FakeDistribution) -> None:
    two_providers_of_twin(fake_distribution)
    with pytest.raises(RuleCollisionError) as info:
        nni_bio.list_rules()
    message = str(info.value)
    assert "'twin'" in message and "nni-bio-alpha 1.0" in message and "nni-bio-beta 1.0" in message
    assert "NNI_BIO_BLOCK_PLUGINS" in message
    with pytest.raises(RuleCollisionError, match="nni-bio-alpha"):
        nni_bio.get_rule("twin")


def test_blocking_one_side_resolves_a_collision(fake_distribution: FakeDistribution,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    two_providers_of_twin(fake_distribution)
    monkeypatch.setenv("NNI_BIO_BLOCK_PLUGINS", "nni-bio-beta")
    _registry.reset_registry()
    assert nni_bio.rule_sources()["twin"].distribution == "nni-bio-alpha"
    assert type(nni_bio.get_rule("twin")).__module__ == "plugin_alpha"


def test_plugin_colliding_with_builtin(fake_distribution: FakeDistribution) -> None:
    fake_distribution("nni-bio-impostor", rules={"fa": "plugin_impostor:Rule"},
                      modules={"plugin_impostor": rule_module("fa")})
    with pytest.raises(RuleCollisionError) as info:
        nni_bio.get_rule("fa")
    assert "nni-bio 0.1" in str(info.value) and "nni-bio-impostor 1.0" in str(info.value)


def test_import_error_becomes_plugin_load_error(fake_distribution: FakeDistribution) -> None:
    fake_distribution("nni-bio-broken", version="2.0", rules={"broken": "plugin_broken:Rule"},
                      modules={"plugin_broken": "raise ImportError('needs the spam package')\n"})
    with pytest.raises(PluginLoadError) as info:
        nni_bio.get_rule("broken")
    message = str(info.value)
    assert "broken = plugin_broken:Rule" in message and "nni-bio-broken 2.0" in message
    assert "needs the spam package" in message
    assert type(info.value.__cause__) is ImportError
    assert str(info.value.__cause__) == "needs the spam package"


def test_missing_module_becomes_plugin_load_error(fake_distribution: FakeDistribution) -> None:
    fake_distribution("nni-bio-ghost", rules={"ghost": "plugin_ghost_missing:Rule"})
    with pytest.raises(PluginLoadError, match="nni-bio-ghost") as info:
        nni_bio.get_rule("ghost")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_entry_point_must_give_a_learning_rule(fake_distribution: FakeDistribution) -> None:
    fake_distribution("nni-bio-odd", rules={"odd": "plugin_odd:NOT_A_RULE", "misnamed": "plugin_odd:Rule"},
                      modules={"plugin_odd": rule_module("other_name") + "\nNOT_A_RULE = 42\n"})
    with pytest.raises(PluginLoadError, match="not a nni_bio.LearningRule"):
        nni_bio.get_rule("odd")
    with pytest.raises(PluginLoadError, match="'other_name'"):
        nni_bio.get_rule("misnamed")


def test_incompatible_api_version(fake_distribution: FakeDistribution) -> None:
    fake_distribution("nni-bio-future", version="9.0", rules={"future": "plugin_future:Rule"},
                      modules={"plugin_future": rule_module("future", api_version=99)})
    assert "future" in nni_bio.list_rules()  # listing reads metadata only
    with pytest.raises(IncompatiblePluginError) as info:
        nni_bio.get_rule("future")
    message = str(info.value)
    assert "version 99" in message and f"version {nni_bio.PLUGIN_API_VERSION}" in message
    assert "nni-bio-future 9.0" in message


@pytest.mark.parametrize("value", ["1", "true"])
def test_disable_autoload_keeps_only_builtins(fake_plugin: Path, monkeypatch: pytest.MonkeyPatch,
                                              value: str) -> None:
    monkeypatch.setenv("NNI_BIO_DISABLE_PLUGIN_AUTOLOAD", value)
    _registry.reset_registry()
    assert nni_bio.list_rules() == BUILTINS
    with pytest.raises(nni_bio.UnknownRuleError):
        nni_bio.get_rule("fake_rule")


def test_autoload_switch_off_value_keeps_plugins(fake_plugin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NNI_BIO_DISABLE_PLUGIN_AUTOLOAD", "0")
    _registry.reset_registry()
    assert "fake_rule" in nni_bio.list_rules()


@pytest.mark.parametrize("blocked", ["nni-bio-fake", "NNI_Bio_Fake", "fake_rule", "spam, nni-bio-fake"])
def test_block_plugins(fake_plugin: Path, monkeypatch: pytest.MonkeyPatch, blocked: str) -> None:
    monkeypatch.setenv("NNI_BIO_BLOCK_PLUGINS", blocked)
    _registry.reset_registry()
    rules = nni_bio.list_rules()
    assert "fake_rule" not in rules and set(BUILTINS) <= set(rules)


def test_missing_api_version_is_refused(fake_distribution: FakeDistribution) -> None:
    fake_distribution("nni-bio-unversioned", version="0.3", rules={"unversioned": "plugin_unversioned:Rule"},
                      modules={"plugin_unversioned": rule_module("unversioned", api_version=None)})
    with pytest.raises(IncompatiblePluginError) as info:
        nni_bio.get_rule("unversioned")
    message = str(info.value)
    assert "nni-bio-unversioned 0.3" in message and "does not declare" in message
    assert f"api_version={nni_bio.PLUGIN_API_VERSION}" in message


def test_builtins_declare_their_api_version() -> None:
    for name in BUILTINS:
        info = type(nni_bio.get_rule(name)).info
        assert info.api_version == nni_bio.PLUGIN_API_VERSION, name


def broken_and_colliding(fake_distribution: FakeDistribution, fake_plugin: Path) -> None:
    """Next to the fake plugin: an import error, a missing api_version, a collision and a builtin impostor."""
    fake_distribution("nni-bio-broken", version="2.0", rules={"broken": "plugin_broken:Rule"},
                      modules={"plugin_broken": "raise ImportError('needs the spam package')\n"})
    fake_distribution("nni-bio-unversioned", rules={"unversioned": "plugin_unversioned:Rule"},
                      modules={"plugin_unversioned": rule_module("unversioned", api_version=None)})
    two_providers_of_twin(fake_distribution)
    fake_distribution("nni-bio-impostor", rules={"fa": "plugin_impostor:Rule"},
                      modules={"plugin_impostor": rule_module("fa")})


def test_cli_lists_every_rule_and_a_row_per_broken_entry_point(
        fake_distribution: FakeDistribution, fake_plugin: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken_and_colliding(fake_distribution, fake_plugin)
    assert cli(["rules"]) == 1
    out, err = capsys.readouterr()
    rows = [line.split() for line in out.splitlines()[1:]]
    by_name: dict[str, list[list[str]]] = {}
    for row in rows:
        by_name.setdefault(row[0], []).append(row)
    for name in ("backprop", "brsf", "dfa", "frsf", "kp", "usf", "fake_rule"):  # the good ones are all there
        assert by_name[name][0][1] != "ERROR", by_name[name]
    assert by_name["fake_rule"][0][2:4] == ["nni-bio-fake", "1.0"]
    broken = " ".join(by_name["broken"][0])
    assert "ERROR nni-bio-broken 2.0" in broken and "PluginLoadError" in broken and "spam" in broken
    assert "IncompatiblePluginError" in " ".join(by_name["unversioned"][0])
    assert sorted(r[2] for r in by_name["twin"]) == ["nni-bio-alpha", "nni-bio-beta"]  # one row per provider
    assert all(r[1] == "ERROR" and "RuleCollisionError:" in r for r in by_name["twin"])
    assert sorted(r[2] for r in by_name["fa"]) == ["nni-bio", "nni-bio-impostor"]
    assert "broken" in err and "twin" in err and "NNI_BIO_BLOCK_PLUGINS" in err


def test_cli_names_lists_the_usable_rules(fake_distribution: FakeDistribution, fake_plugin: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    broken_and_colliding(fake_distribution, fake_plugin)
    assert cli(["rules", "--names"]) == 1
    names = capsys.readouterr().out.split()
    assert names == sorted(names) and set(BUILTINS) - {"fa"} | {"fake_rule"} <= set(names)
    assert not {"fa", "twin", "broken", "unversioned"} & set(names)


def test_cli_exits_zero_when_every_rule_loads(fake_plugin: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["rules"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].split() == ["name", "family", "provider", "api", "summary"]
    assert "ERROR" not in out and err == ""


PUBLIC_ONLY = """
import torch
from nni_bio import Feedback, LayerOp, LearningRule, RuleInfo, PLUGIN_API_VERSION, xavier_like, xavier_std


class ScaledFixedFeedback(Feedback):
    def __init__(self, weight, generator):
        super().__init__()
        self.register_buffer("matrix", xavier_like(weight, generator) * xavier_std(weight) ** 0)

    def backward(self, op: LayerOp, grad_out, x, feedback, output, needs):
        return op.grads(grad_out, x, feedback, needs)

    def feedback_weight(self, weight, training):
        return self.matrix


class Rule(LearningRule):
    info = RuleInfo(name="public_only", family="feedback", summary="uses only nni_bio's public names",
                    api_version=PLUGIN_API_VERSION)

    def feedback(self, layer):
        return ScaledFixedFeedback(layer.weight.detach(), layer.rule_generator())
"""


def test_a_plugin_needs_only_public_names(fake_distribution: FakeDistribution) -> None:
    fake_distribution("nni-bio-public", rules={"public_only": "plugin_public:Rule"},
                      modules={"plugin_public": PUBLIC_ONLY})
    assert {"LayerOp", "xavier_like", "xavier_std"} <= set(nni_bio.__all__)
    check_rule("public_only")
