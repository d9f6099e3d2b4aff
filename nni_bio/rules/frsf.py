"""Fixed random-magnitude sign-concordant feedback (frSF).

Liao, Leibo & Poggio 2016, arXiv 1510.05067. B = |R| * sign(W): the magnitude |R| is an
Xavier-uniform draw made once from the layer's own generator and stored (buffer ``magnitude``); the
sign follows the current W at every forward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nni_bio.core.layers import RuleLayer
from nni_bio.core.rule import Feedback, LearningRule, RuleInfo, SignFeedback, xavier_like


class FixedMagnitudeSignFeedback(SignFeedback):
    def __init__(self, weight: Tensor, generator: torch.Generator):
        super().__init__()
        self.register_buffer("magnitude", xavier_like(weight, generator).abs_())

    def sign_magnitude(self, weight: Tensor, training: bool) -> Tensor:
        return self._buffers["magnitude"]


class FixedRandomSignFeedbackRule(LearningRule):
    info = RuleInfo(
        name="frsf",
        family="feedback",
        summary="fixed random-magnitude sign-concordant feedback: B = |R| * sign(W), R fixed",
        paper="Liao, Leibo & Poggio 2016, arXiv 1510.05067",
        api_version=1,
    )

    def feedback(self, layer: RuleLayer) -> Feedback:
        return FixedMagnitudeSignFeedback(layer.weight.detach(), layer.rule_generator())
