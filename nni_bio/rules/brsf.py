"""Batchwise random-magnitude sign-concordant feedback (brSF).

Liao, Leibo & Poggio 2016, arXiv 1510.05067. B_t = |R_t| * sign(W_t) with R_t a fresh Xavier-uniform
draw for every training step. Unlike BioTorch, the draw happens once per *training* forward, never
in eval, and comes from a per-layer generator seeded by (layer seed, step): the global RNG stream is
untouched and a checkpoint (which stores seed and step, not the matrix) resumes the same sequence.

Seed and step are Python ints (saved in the state dict as ``feedback.seed``/``feedback.step``), and
the generator is made once per device and reseeded each step, so a forward never waits for the GPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nni_bio.layers import RuleLayer
from nni_bio.rule import Feedback, LearningRule, RuleInfo, xavier_like

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads (seed, step) over the 63-bit seed space


def _step_seed(seed: int, step: int) -> int:
    return (seed * _MIX + step) % (2**63 - 1)


class BatchwiseSignFeedback(Feedback):
    """Host state ``seed`` and ``step`` (ints); the magnitudes are regenerated from them."""

    host_state = ("seed", "step")

    def __init__(self, seed: int):
        super().__init__()
        self.seed, self.step = int(seed), 0
        self._generator: torch.Generator | None = None

    def magnitude(self, weight: Tensor) -> Tensor:
        """|R_t| for the current step, drawn on the weight's device."""
        generator = self._generator
        if generator is None or generator.device != weight.device:
            generator = self._generator = torch.Generator(device=weight.device)
        generator.manual_seed(_step_seed(self.seed, self.step))
        return xavier_like(weight, generator).abs_()

    def feedback_weight(self, weight: Tensor, training: bool) -> Tensor:
        if training:
            self.step += 1
        with torch.no_grad():
            return torch.sign(weight).mul_(self.magnitude(weight))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_generator"] = None  # rebuilt on first use; generators are not copied
        return state


class BatchwiseRandomSignFeedbackRule(LearningRule):
    info = RuleInfo(
        name="brsf",
        family="feedback",
        summary="batchwise random-magnitude sign-concordant feedback: B = |R_t| * sign(W), R_t redrawn per step",
        paper="Liao, Leibo & Poggio 2016, arXiv 1510.05067",
        api_version=1,
    )

    def feedback(self, layer: RuleLayer) -> Feedback:
        return BatchwiseSignFeedback(layer.seed)
