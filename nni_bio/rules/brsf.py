"""Batchwise random-magnitude sign-concordant feedback (brSF).

Liao, Leibo & Poggio 2016, arXiv 1510.05067. B_t = |R_t| * sign(W_t) with R_t a fresh Xavier-uniform
draw for every training step. Unlike BioTorch, the draw happens once per *training* forward, never
in eval, and comes from a per-layer generator seeded by (layer seed, step): the global RNG stream is
untouched and a checkpoint (which stores seed and step, not the matrix) resumes the same sequence.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nni_bio.layers import RuleLayer
from nni_bio.rule import Feedback, LearningRule, RuleInfo, xavier_like

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads (seed, step) over the 63-bit seed space


class BatchwiseSignFeedback(Feedback):
    """Buffers ``seed`` and ``step``; the magnitudes are regenerated from them."""

    def __init__(self, seed: int):
        super().__init__()
        self.register_buffer("seed", torch.tensor(seed, dtype=torch.int64))
        self.register_buffer("step", torch.tensor(0, dtype=torch.int64))

    def magnitude(self, weight: Tensor) -> Tensor:
        """|R_t| for the current step."""
        generator = torch.Generator(device=weight.device)
        generator.manual_seed((int(self.seed) * _MIX + int(self.step)) % (2**63 - 1))
        return xavier_like(weight, generator).abs_()

    def feedback_weight(self, weight: Tensor, training: bool) -> Tensor:
        if training:
            self.step += 1
        with torch.no_grad():
            return torch.sign(weight).mul_(self.magnitude(weight))


class BatchwiseRandomSignFeedbackRule(LearningRule):
    info = RuleInfo(
        name="brsf",
        family="feedback",
        summary="batchwise random-magnitude sign-concordant feedback: B = |R_t| * sign(W), R_t redrawn per step",
        paper="Liao, Leibo & Poggio 2016, arXiv 1510.05067",
    )

    def feedback(self, layer: RuleLayer) -> Feedback:
        seed = int(torch.randint(0, 2**62, (1,)))  # from the global RNG: reproducible under torch.manual_seed
        return BatchwiseSignFeedback(seed)
