"""Feedback alignment (FA): the error is sent down through a fixed random tensor B.

Lillicrap, Cownden, Tweed & Akerman 2016, "Random synaptic feedback weights support error
backpropagation for deep learning", arXiv 1411.0247. B has W's shape, is drawn once with W's
initialiser (Xavier-uniform, from the layer's own generator), is never updated and is independent of
W. Weight and bias gradients are exact and local.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nni_bio.core.layers import RuleLayer
from nni_bio.core.rule import Feedback, LearningRule, RuleInfo, xavier_like


class FixedRandomFeedback(Feedback):
    """Buffer ``matrix``: a fixed Xavier-uniform draw of the weight's shape."""

    def __init__(self, weight: Tensor, generator: torch.Generator):
        super().__init__()
        self.register_buffer("matrix", xavier_like(weight, generator))

    def feedback_weight(self, weight: Tensor, training: bool) -> Tensor:
        return self.matrix


class FeedbackAlignment(LearningRule):
    info = RuleInfo(
        name="fa",
        family="feedback",
        summary="feedback alignment: fixed random feedback B instead of W^T",
        paper="Lillicrap et al. 2016, arXiv 1411.0247",
        api_version=1,
    )

    def feedback(self, layer: RuleLayer) -> Feedback:
        return FixedRandomFeedback(layer.weight.detach(), layer.rule_generator())
