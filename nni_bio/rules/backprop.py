"""Back-propagation: the exact gradient, the control rule of every search."""

from __future__ import annotations

from nni_bio.core.layers import RuleLayer
from nni_bio.core.rule import Feedback, LearningRule, RuleInfo


class ExactFeedback(Feedback):
    """No substitute: the host layer runs plain ``F.linear``/``F.conv2d`` and autograd."""

    exact = True


class Backprop(LearningRule):
    info = RuleInfo(
        name="backprop",
        family="backprop",
        summary="exact back-propagation (error sent down through W^T)",
        paper="Rumelhart, Hinton & Williams 1986",
        api_version=1,
    )

    def feedback(self, layer: RuleLayer) -> Feedback:
        return ExactFeedback()
