"""The conformance kit (nni_bio.testing) on every available rule: built-ins and installed plugins."""

from __future__ import annotations

import pytest

import nni_bio
from nni_bio.testing import CHECKS, Check, run_check

RULES = nni_bio.list_rules()  # at collection time, so installed plugins get checked too


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("rule", RULES)
def test_conformance(rule: str, check: Check) -> None:
    run_check(rule, check)


def test_every_builtin_is_checked() -> None:
    assert {"backprop", "brsf", "dfa", "fa", "frsf", "kp", "usf"} <= set(RULES)
    assert len(CHECKS) >= 7
