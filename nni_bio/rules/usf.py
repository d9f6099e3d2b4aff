"""Uniform sign-concordant feedback (uSF, "sign symmetry").

Liao, Leibo & Poggio 2016, arXiv 1510.05067; scale from Xiao et al. 2018, arXiv 1811.03567.
B = s * sign(W), recomputed from the current W at every forward; s is the Xavier standard deviation
sqrt(2 / (fan_in + fan_out)), which keeps the backward signal from exploding. No stored state.
"""

from __future__ import annotations

from torch import Tensor

from nni_bio.core.layers import RuleLayer
from nni_bio.core.rule import Feedback, LearningRule, RuleInfo, SignFeedback, xavier_std


class UniformSignFeedback(SignFeedback):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def sign_magnitude(self, weight: Tensor, training: bool) -> float:
        return self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4g}"


class UniformSignFeedbackRule(LearningRule):
    info = RuleInfo(
        name="usf",
        family="feedback",
        summary="uniform sign-concordant feedback: B = s * sign(W)",
        paper="Liao, Leibo & Poggio 2016, arXiv 1510.05067; Xiao et al. 2018, arXiv 1811.03567",
        api_version=1,
    )

    def feedback(self, layer: RuleLayer) -> Feedback:
        return UniformSignFeedback(xavier_std(layer.weight))
