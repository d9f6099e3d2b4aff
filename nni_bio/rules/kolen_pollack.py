"""Kolen-Pollack (KP): feedback alignment whose feedback weights learn to equal W.

Akrout, Wilson, Humphreys, Lillicrap & Tweed 2019, "Deep learning without weight transport",
arXiv 1904.05391. The error goes down through B (a Parameter of W's shape, Xavier-initialised
independently of W). B receives exactly W's gradient (the transposed update in Akrout's
convention), so the ordinary optimizer gives it W's update and W's weight decay: B - W shrinks by
the decay factor every step and B converges to W.
"""

from __future__ import annotations

from torch import Tensor, nn

from nni_bio.layers import RuleLayer
from nni_bio.rule import Feedback, LearningRule, RuleInfo, xavier_like


class LearnedFeedback(Feedback):
    """Parameter ``matrix``, trained by the optimizer with W's gradient."""

    def __init__(self, weight: Tensor):
        super().__init__()
        self.matrix = nn.Parameter(xavier_like(weight))

    def feedback_weight(self, weight: Tensor, training: bool) -> Tensor:
        return self.matrix


class KolenPollack(LearningRule):
    info = RuleInfo(
        name="kp",
        family="feedback",
        summary="Kolen-Pollack: learned feedback B with W's update and decay, so B -> W",
        paper="Akrout et al. 2019, arXiv 1904.05391",
        learned_feedback=True,
    )

    def feedback(self, layer: RuleLayer) -> Feedback:
        return LearnedFeedback(layer.weight.detach())
