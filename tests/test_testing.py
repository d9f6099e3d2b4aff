"""nni_bio.testing holds a rule to the math of the contract: deliberately wrong rules fail check_rule."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import nni_bio
from nni_bio.core.errors import RuleContractError
from nni_bio.core.layers import LayerOp, RuleLayer
from nni_bio.core.rule import Feedback, LearningRule, RuleInfo
from nni_bio.testing import (check_exact_local_gradients, check_feedback_tensor, check_rule,
                             check_transpose_feedback_is_backprop)


class FixedFeedback(Feedback):
    """FA done right: a fixed random B of W's shape."""

    def __init__(self, weight: Tensor, generator: torch.Generator):
        super().__init__()
        self.register_buffer("matrix", nni_bio.xavier_like(weight, generator))

    def feedback_weight(self, weight: Tensor, training: bool) -> Tensor:
        return self.matrix


class GoodRule(LearningRule):
    info = RuleInfo(name="test_good", family="feedback", summary="FA, written as a plugin would", api_version=1)

    def feedback(self, layer: RuleLayer) -> Feedback:
        return FixedFeedback(layer.weight.detach(), layer.rule_generator())


class DoubledWeightGradient(FixedFeedback):
    def backward(self, op: LayerOp, grad_out: Tensor, x: Tensor, feedback: Tensor, output: Tensor | None,
                 needs: tuple[bool, bool, bool]):
        gx, gw, gb = op.grads(grad_out, x, feedback, needs)
        return gx, (2 * gw if gw is not None else None), gb


class WrongWeightGradient(GoodRule):
    info = RuleInfo(name="test_wrong_weight_grad", family="feedback", summary="2x the weight gradient", api_version=1)

    def feedback(self, layer: RuleLayer) -> Feedback:
        return DoubledWeightGradient(layer.weight.detach(), layer.rule_generator())


class NoBiasGradient(FixedFeedback):
    def backward(self, op, grad_out, x, feedback, output, needs):
        gx, gw, gb = op.grads(grad_out, x, feedback, needs)
        return gx, gw, (torch.zeros_like(gb) if gb is not None else None)


class WrongBiasGradient(GoodRule):
    info = RuleInfo(name="test_wrong_bias_grad", family="direct", summary="zero bias gradient", api_version=1)

    def feedback(self, layer: RuleLayer) -> Feedback:
        return NoBiasGradient(layer.weight.detach(), layer.rule_generator())


class LeakingFeedback(Feedback):
    """Sign symmetry computed outside no_grad: the feedback tensor hangs off W's graph."""

    def feedback_weight(self, weight: Tensor, training: bool) -> Tensor:
        return 0.1 * weight + 0.01 * torch.sign(weight)


class LeakingRule(LearningRule):
    info = RuleInfo(name="test_leaking", family="feedback", summary="feedback requiring grad", api_version=1)

    def feedback(self, layer: RuleLayer) -> Feedback:
        return LeakingFeedback()


class LearnedButTiedToW(Feedback):
    def __init__(self, weight: Tensor):
        super().__init__()
        self.offset = nn.Parameter(torch.zeros_like(weight))

    def feedback_weight(self, weight: Tensor, training: bool) -> Tensor:
        return weight + self.offset


class LearnedLeakingRule(LearningRule):
    info = RuleInfo(name="test_learned_leaking", family="feedback", summary="learned B that is W plus a Parameter",
                    api_version=1, learned_feedback=True)

    def feedback(self, layer: RuleLayer) -> Feedback:
        return LearnedButTiedToW(layer.weight.detach())


class IgnoresFeedbackArgument(FixedFeedback):
    """Sends the error down through a tensor of its own instead of the one it was handed."""

    def backward(self, op, grad_out, x, feedback, output, needs):
        return op.grads(grad_out, x, self.matrix, needs)


class IgnoringRule(GoodRule):
    info = RuleInfo(name="test_ignoring", family="feedback", summary="backward ignores its feedback", api_version=1)

    def feedback(self, layer: RuleLayer) -> Feedback:
        return IgnoresFeedbackArgument(layer.weight.detach(), layer.rule_generator())


class FlatFeedback(Feedback):
    def feedback_weight(self, weight: Tensor, training: bool) -> Tensor:
        return weight.detach().flatten(1)


class WrongShapeRule(LearningRule):
    info = RuleInfo(name="test_wrong_shape", family="feedback", summary="feedback not of W's shape", api_version=1,
                    layer_kinds=("conv2d",))

    def feedback(self, layer: RuleLayer) -> Feedback:
        return FlatFeedback()


def test_a_correct_plugin_rule_passes() -> None:
    check_rule(GoodRule())


@pytest.mark.parametrize("rule, message", [
    (WrongWeightGradient(), "weight gradient is not exact"),
    (WrongBiasGradient(), "bias gradient is not exact"),
    (LeakingRule(), "learned_feedback"),
    (LearnedLeakingRule(), "depends on W"),
    (IgnoringRule(), "with B = W the input gradient is not backprop's"),
    (WrongShapeRule(), "of W's shape"),
], ids=lambda v: v.info.name if isinstance(v, LearningRule) else "")
def test_a_wrong_rule_fails_check_rule(rule: LearningRule, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_rule(rule)


def test_each_math_check_catches_its_own_defect() -> None:
    check_exact_local_gradients(IgnoringRule())  # its local gradients are right...
    with pytest.raises(AssertionError):
        check_transpose_feedback_is_backprop(IgnoringRule())  # ...its error path is not
    check_feedback_tensor(WrongWeightGradient())
    with pytest.raises(AssertionError):
        check_exact_local_gradients(WrongWeightGradient())


def test_leaking_feedback_is_refused_by_the_layer() -> None:
    """Before: W.grad silently got the feedback path's gradient on top of its own."""
    layer = LeakingRule().linear(6, 5)
    x = torch.randn(4, 6, requires_grad=True)
    with pytest.raises(RuleContractError, match="test_leaking.*learned_feedback=True"):
        layer(x)
    with torch.no_grad():
        layer(x)  # no backward can follow: nothing to refuse
    layer.eval()
    with pytest.raises(RuleContractError):
        layer(x)


def test_learned_feedback_gets_exactly_ws_gradient() -> None:
    layer = nni_bio.get_rule("kp").linear(6, 5)
    x = torch.randn(4, 6, requires_grad=True)
    out = layer(x)
    g = torch.randn_like(out)
    out.backward(g)
    torch.testing.assert_close(layer.weight.grad, g.t() @ x.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(layer.feedback.matrix.grad, layer.weight.grad, rtol=0, atol=0)
