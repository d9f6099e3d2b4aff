"""Plugin discovery through the ``nni_bio.rules`` entry-point group, with fake distributions (no pip)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import nni_bio
from nni_bio import _registry
from nni_bio.errors import IncompatiblePluginError, PluginLoadError, RuleCollisionError

FakeDistribution = Callable[..., Path]  # the fake_distribution fixture of conftest.py

BUILTINS = ["backprop", "brsf", "dfa", "fa", "frsf", "kp", "usf"]


def rule_module(name: str, *, api_version: int = 1, preamble: str = "") -> str:
    """Source of a plugin module defining ``Rule``: backprop through the generic Function (B = W)."""
    return f"""
{preamble}
from nni_bio.rule import Feedback, LearningRule, RuleInfo


class TransposeFeedback(Feedback):
    def feedback_weight(self, weight, training):
        return weight.detach()


class Rule(LearningRule):
    info = RuleInfo(name={name!r}, family="feedback", summary="fake plugin rule", api_version={api_version})

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
