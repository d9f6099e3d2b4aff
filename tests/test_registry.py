"""nni_bio.core._registry: listing, lookup, errors and run-time registration (built-in rules only)."""

from __future__ import annotations

import pytest
import torch

import nni_bio
from nni_bio.core import _registry
from nni_bio.core.errors import IncompatiblePluginError, RuleCollisionError, RuleTypeError, UnknownRuleError
from nni_bio.core.layers import RuleLayer
from nni_bio.core.rule import Feedback, LearningRule, RuleInfo

BUILTINS = ["backprop", "brsf", "dfa", "fa", "frsf", "kp", "usf"]


class TransposeFeedback(Feedback):
    """B = W: backprop through the generic Function."""

    def feedback_weight(self, weight: torch.Tensor, training: bool) -> torch.Tensor:
        return weight.detach()


class NotebookRule(LearningRule):
    info = RuleInfo(name="notebook_rule", family="feedback", summary="a rule defined at run time", api_version=1)

    def feedback(self, layer: RuleLayer) -> Feedback:
        return TransposeFeedback()


def test_builtins_come_from_nni_bio() -> None:
    sources = nni_bio.rule_sources()
    assert sorted(n for n, s in sources.items() if s.distribution == "nni-bio") == BUILTINS
    assert sources["fa"].value == "nni_bio.rules.feedback_alignment:FeedbackAlignment"
    rules = nni_bio.list_rules()
    assert rules == sorted(rules) and set(BUILTINS) <= set(rules)


def test_builtin_rules_describe_themselves() -> None:
    for name in BUILTINS:
        rule = nni_bio.get_rule(name)
        assert isinstance(rule, LearningRule) and rule.info.name == name
        assert rule.info.api_version == nni_bio.PLUGIN_API_VERSION
    assert nni_bio.get_rule("dfa").info.needs_global_error
    assert [n for n in BUILTINS if nni_bio.get_rule(n).info.family == "backprop"] == ["backprop"]


def test_list_rules_filters_with_fnmatch() -> None:
    assert nni_bio.list_rules("*sf") == ["brsf", "frsf", "usf"]
    assert nni_bio.list_rules(["fa", "k*"]) == ["fa", "kp"]
    assert nni_bio.list_rules("*sf", exclude="u*") == ["brsf", "frsf"]
    assert nni_bio.list_rules(exclude=["*"]) == []


def test_get_rule_caches_and_passes_rule_objects_through() -> None:
    rule = nni_bio.get_rule("usf")
    assert nni_bio.get_rule("usf") is rule
    assert nni_bio.get_rule(rule) is rule
    assert nni_bio.is_rule("usf") and not nni_bio.is_rule("usg")


def test_get_rule_refuses_classes_and_other_non_names() -> None:
    with pytest.raises(nni_bio.NniBioError, match=r"pass an instance, get_rule\(NotebookRule\(\)\)") as info:
        nni_bio.get_rule(NotebookRule)  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError) and "get_rule('notebook_rule')" in str(info.value)
    for value in (None, 3, ["fa"]):
        with pytest.raises(RuleTypeError, match="rule name"):
            nni_bio.get_rule(value)  # type: ignore[arg-type]


def test_set_rule_takes_rule_objects() -> None:
    layer = nni_bio.get_rule("fa").linear(4, 3)
    with pytest.raises(RuleTypeError, match=r"nni_bio.get_rule\('usf'\)"):
        layer.set_rule("usf")  # type: ignore[arg-type]
    with pytest.raises(RuleTypeError, match=r"NotebookRule\(\)"):
        layer.set_rule(NotebookRule)  # type: ignore[arg-type]
    assert layer.rule_name == "fa"


def test_unknown_rule_suggests_close_names_and_lists_rules() -> None:
    with pytest.raises(UnknownRuleError) as info:
        nni_bio.get_rule("usg")
    message = str(info.value)
    assert "'usg'" in message and "Did you mean 'usf'" in message
    assert "Available rules: " + ", ".join(nni_bio.list_rules()) in message
    assert isinstance(info.value, LookupError) and info.value.name == "usg"
    with pytest.raises(UnknownRuleError) as info:
        nni_bio.get_rule("zzzzzz")
    assert "Did you mean" not in str(info.value)


def test_register_rule_at_run_time() -> None:
    assert nni_bio.register_rule(NotebookRule) is NotebookRule  # usable as a decorator
    assert "notebook_rule" in nni_bio.list_rules()
    assert nni_bio.rule_sources()["notebook_rule"].distribution == "(registered at run time)"
    layer = nni_bio.get_rule("notebook_rule").linear(4, 3)
    x = torch.randn(2, 4, requires_grad=True)
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(2, 3) @ layer.weight.detach())
    nni_bio.unregister_rule("notebook_rule")
    assert not nni_bio.is_rule("notebook_rule")


def test_register_rule_twice_collides() -> None:
    nni_bio.register_rule(NotebookRule())
    with pytest.raises(RuleCollisionError, match="notebook_rule"):
        nni_bio.register_rule(NotebookRule())


def test_register_rule_with_builtin_name_collides() -> None:
    class FakeFa(NotebookRule):
        info = RuleInfo(name="fa", family="feedback", summary="impostor", api_version=1)

    with pytest.raises(RuleCollisionError) as info:
        nni_bio.register_rule(FakeFa)
    message = str(info.value)
    assert "'fa'" in message and "nni-bio 0.1" in message and "registered at run time" in message
    assert nni_bio.get_rule("fa").info.summary != "impostor"


def test_register_rule_checks_api_version() -> None:
    class Future(NotebookRule):
        info = RuleInfo(name="future_rule", family="feedback", summary="from the future", api_version=99)

    with pytest.raises(nni_bio.NniBioError, match="99"):
        nni_bio.register_rule(Future)
    assert not nni_bio.is_rule("future_rule")


def test_register_rule_requires_an_api_version() -> None:
    class Unversioned(NotebookRule):
        info = RuleInfo(name="unversioned_rule", family="feedback", summary="no api_version")

    with pytest.raises(IncompatiblePluginError, match="Unversioned does not declare"):
        nni_bio.register_rule(Unversioned)
    assert not nni_bio.is_rule("unversioned_rule")
    with pytest.raises(ValueError, match="api_version must be an int"):
        RuleInfo(name="x", family="feedback", summary="x", api_version="1")  # type: ignore[arg-type]


def test_reset_registry_forgets_run_time_rules() -> None:
    nni_bio.register_rule(NotebookRule)
    _registry.reset_registry()
    assert not nni_bio.is_rule("notebook_rule")


def test_rule_names_are_identifiers() -> None:
    for bad in ("Bad", "with-dash", "1st", "dotted.name", ""):
        with pytest.raises(ValueError, match="must match"):
            RuleInfo(name=bad, family="feedback", summary="x")
