"""Batchwise random-magnitude sign-concordant feedback (brSF).

Liao, Leibo & Poggio 2016, arXiv 1510.05067. B_t = |R_t| * sign(W_t) with fresh Xavier-uniform
magnitudes |R_t| at every training step. Unlike BioTorch, the draw happens once per *training*
forward, never in eval, and never touches the global RNG stream.

How |R_t| is drawn: drawing a weight-sized matrix from a random generator at every step costs more
than the layer's own matrix products on a CPU (2.5x a 1024x1024 linear step), so each layer draws
once, from its own seed, a pool of ``numel(W) + L`` values of |Xavier-uniform| (L = numel(W) clamped
to [4096, 65536]), and |R_t| is the window of W's size starting at offset o_t in [0, L], o_t a
64-bit mix (splitmix64) of (layer seed, step). Within a step the magnitudes are distinct
independent draws; from step to step every entry gets a new magnitude, picked at a pseudo-random
place among the L + 1 pool values it can see. (Exact per-step independent draws would give every
step a matrix independent of the previous ones; here two steps' matrices are shifted windows of
the same pool.) B_t then costs what frSF's B does: one pass over W, no random numbers.

Seed and step are Python ints (saved in the state dict as ``feedback.seed``/``feedback.step``); the
pool is rebuilt from the seed (on the CPU, so it is the same on every device) and never saved. A
checkpoint therefore resumes the same sequence, and a forward never waits for the GPU.

``feedback.draws`` (an int in the state dict) names the scheme: 1 is the pool; 0, what a state saved
without it (nni-bio 0.1) gets, is the earlier one, a full draw per step from a generator seeded by
(seed, step), kept so that such a checkpoint resumes the very draws it would have made.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nni_bio.core.eager_under_compile import eager_under_compile
from nni_bio.core.layers import RuleLayer
from nni_bio.core.rule import Feedback, LearningRule, RuleInfo, SignFeedback, xavier_like, xavier_std

_MASK = 2**64 - 1
_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant
_MIN_OFFSETS, _MAX_OFFSETS = 4096, 65536


def _mix(seed: int, step: int) -> int:
    """splitmix64 of (seed, step): a well-spread 64-bit integer."""
    z = (seed + (step + 1) * _MIX) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _step_seed(seed: int, step: int) -> int:
    """Generator seed of a step under ``draws=0`` (nni-bio 0.1)."""
    return (seed * _MIX + step) % (2**63 - 1)


def pool_size(numel: int) -> int:
    """Length of the magnitude pool of a weight with ``numel`` entries."""
    return numel + min(max(numel, _MIN_OFFSETS), _MAX_OFFSETS)


class BatchwiseSignFeedback(SignFeedback):
    """Host state ``seed``, ``step`` and ``draws`` (ints); the magnitudes are regenerated from them."""

    host_state = ("seed", "step", "draws")

    def __init__(self, seed: int):
        super().__init__()
        self.seed, self.step, self.draws = int(seed), 0, 1
        self._pool: tuple[tuple, Tensor, tuple[int, ...]] | None = None  # (key, pool, strides of W's shape)
        self._generator: torch.Generator | None = None

    def pool(self, weight: Tensor) -> Tensor:
        """The layer's pool of |Xavier-uniform| magnitudes, on the weight's device and in its dtype."""
        key = (self.seed, weight.shape, weight.device, weight.dtype)
        if self._pool is None or self._pool[0] != key:
            bound = 3.0 ** 0.5 * xavier_std(weight)
            generator = torch.Generator().manual_seed(self.seed)
            values = torch.empty(pool_size(weight.numel())).uniform_(-bound, bound, generator=generator).abs_()
            strides = torch.empty(weight.shape, device="meta").stride()  # of a contiguous tensor of W's shape
            self._pool = (key, values.to(device=weight.device, dtype=weight.dtype), strides)
        return self._pool[1]

    def magnitude(self, weight: Tensor) -> Tensor:
        """|R_t| for the current step: a read-only view of the pool, of W's shape (``draws=0``: a new tensor)."""
        if self.draws == 0:
            generator = self._generator
            if generator is None or generator.device != weight.device:
                generator = self._generator = torch.Generator(device=weight.device)
            generator.manual_seed(_step_seed(self.seed, self.step))
            return xavier_like(weight, generator).abs_()
        pool, n = self.pool(weight), weight.numel()
        offset = _mix(self.seed, self.step) % (pool.numel() - n + 1)
        return pool.as_strided(weight.shape, self._pool[2], offset)

    def sign_magnitude(self, weight: Tensor, training: bool) -> Tensor:
        staged = self._buffers.get("staged")
        if staged is not None and torch.compiler.is_compiling():
            return staged  # traced as a buffer: stage_for_compile advanced the step before this compiled forward
        return self._next_magnitude(weight, training)

    @eager_under_compile  # host state (step, offset): run eagerly, not guarded on (and recompiled for) every step
    def _next_magnitude(self, weight: Tensor, training: bool) -> Tensor:
        if training:  # a plain int in __dict__: nn.Module.__setattr__'s checks cost more than the rest of this call
            self.__dict__["step"] += 1
        return self.magnitude(weight)

    def stage_for_compile(self, weight: Tensor, training: bool) -> None:
        """Advance the host state for the next compiled forward, outside the graph.

        :func:`nni_bio.train.compiling.compile_model` calls it for every brSF layer before each call of the
        compiled network; the layer then reads this step's magnitudes as a buffer (``staged``, not saved in
        the state dict), so the graph never breaks at the step counter nor is guarded on it;
        :meth:`unstage_for_compile` drops it after the call. Called by hand, it makes one step's draw, as a
        training forward does.
        """
        self.register_buffer("staged", self._next_magnitude(weight, training), persistent=False)

    def unstage_for_compile(self) -> None:
        """Drop what :meth:`stage_for_compile` staged (after the compiled call; its graph keeps what it saved)."""
        if self._buffers.pop("staged", None) is not None:
            self._non_persistent_buffers_set.discard("staged")

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        missing = len(missing_keys)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if prefix + "draws" not in state_dict:  # saved before the pool existed: resume its draws
            self.draws = 0
            if prefix + "draws" in missing_keys[missing:]:
                missing_keys.remove(prefix + "draws")

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_pool"] = state["_generator"] = None  # rebuilt on first use
        if "staged" in state.get("_buffers", {}):  # a view of the pool: staged again before the next compiled call
            state["_buffers"] = {k: v for k, v in state["_buffers"].items() if k != "staged"}
            state["_non_persistent_buffers_set"] = state["_non_persistent_buffers_set"] - {"staged"}
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
