"""Kolen-Pollack (KP): feedback alignment whose feedback weights learn to equal W.

Akrout, Wilson, Humphreys, Lillicrap & Tweed 2019, "Deep learning without weight transport",
arXiv 1904.05391. The error goes down through B (a Parameter of W's shape, Xavier-initialised
independently of W). B receives exactly W's gradient (the transposed update in Akrout's
convention), so the ordinary optimizer gives it W's update and W's weight decay: B - W shrinks by
the decay factor every step and B converges to W.

"B -> W" is a property of the optimizer, not of this file. It holds when:

- **weight decay > 0.** Identical gradients give identical updates, so only the decay term shrinks
  B - W. Without decay, B - W keeps its initial value forever and the rule is feedback alignment
  with a drifting B. :func:`nni_bio.train.training.make_optimizer` warns about this case.
- **the update is a linear function of the gradient plus the decay**: plain SGD (B - W shrinks by
  exactly 1 - lr * wd per step), SGD with momentum mu (the gap follows heavy-ball dynamics and
  shrinks about 1 / (1 - mu) times faster), AdamW (decoupled decay: exactly 1 - lr * wd per step).
  ``torch.optim.Adam(weight_decay=...)`` adds wd * W and wd * B to the gradients before its
  per-coordinate normalisation, so the gap shrinks only approximately and more slowly.
- **B and W share a parameter group** (same learning rate, momentum and decay) and any gradient
  clipping scales both by the same factor. :func:`nni_bio.train.training.clip_grad_norm` (used by
  ``nni_bio.train.training.train``) does, and counts W's gradient once in the norm; a plain
  ``clip_grad_norm_(model.parameters())`` counts it twice (B holds a copy).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nni_bio.core.layers import RuleLayer
from nni_bio.core.rule import Feedback, LearningRule, RuleInfo, xavier_like


class LearnedFeedback(Feedback):
    """Parameter ``matrix``, trained by the optimizer with W's gradient."""

    def __init__(self, weight: Tensor, generator: torch.Generator):
        super().__init__()
        self.matrix = nn.Parameter(xavier_like(weight, generator))

    def feedback_weight(self, weight: Tensor, training: bool) -> Tensor:
        return self.matrix


class KolenPollack(LearningRule):
    info = RuleInfo(
        name="kp",
        family="feedback",
        summary="Kolen-Pollack: learned feedback B with W's update and decay, so B -> W",
        paper="Akrout et al. 2019, arXiv 1904.05391",
        api_version=1,
        learned_feedback=True,
    )

    def feedback(self, layer: RuleLayer) -> Feedback:
        return LearnedFeedback(layer.weight.detach(), layer.rule_generator())
