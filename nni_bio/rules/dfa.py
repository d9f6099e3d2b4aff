"""Direct feedback alignment (DFA): the error sent below is a fixed random projection of the
network's output error.

Nøkland 2016, "Direct feedback alignment provides learning in deep neural networks",
arXiv 1609.01596. As in BioTorch, the projection sits on the layer's *input* side: a DFA layer sends
e @ B_dir to the layer below instead of delta @ W (B_dir: num_classes x input features, a fixed
Xavier-uniform draw). After the activation and BatchNorm below, that layer receives
(B_dir e) * f'(a): the DFA update. The layer's own weight and bias gradients stay exact and local.

For conv layers the projection covers every input position and channel (not BioTorch's spatially
tiled kernel, which cannot serve depthwise convs). B_dir is generated lazily from the layer's seed, on
the first backward, once the number of classes and the input shape are known; only the seed is
saved in the state dict (``feedback.seed``). It is drawn on the CPU, so it is the same on every
device, once per (shape, device, dtype) and cached: later backwards reuse it and the seed is a
Python int, so a backward never waits for the GPU.

Requires :func:`nni_bio.enable_dfa` on the model.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from nni_bio.core.errors import DFAWiringError
from nni_bio.core.layers import LayerOp, RuleLayer
from nni_bio.core.rule import Feedback, LearningRule, RuleInfo


class DirectProjectionFeedback(Feedback):
    """Host state ``seed`` (an int); the projection is regenerated from it (cached per shape, device, dtype)."""

    host_state = ("seed",)

    def __init__(self, layer: RuleLayer, seed: int):
        super().__init__()
        self.seed = int(seed)
        self._host = [layer]  # a list, so the host is not registered as a child module
        self._cache: dict[tuple, Tensor] = {}

    def projection(self, num_classes: int, features: int, device: torch.device,
                   dtype: torch.dtype = torch.float32) -> Tensor:
        """B_dir (num_classes x features), Xavier-uniform from the seed, on ``device`` in ``dtype``."""
        key = (num_classes, features, torch.device(device), dtype, self.seed)
        if key not in self._cache:
            generator = torch.Generator().manual_seed(self.seed)
            bound = math.sqrt(6.0 / (num_classes + features))  # Xavier-uniform
            matrix = torch.empty(num_classes, features).uniform_(-bound, bound, generator=generator)
            self._cache = {key: matrix.to(device=device, dtype=dtype)}
        return self._cache[key]

    def feedback_weight(self, weight: Tensor, training: bool) -> Tensor:
        return weight.detach()  # unused: the backward below needs no matrix of W's shape

    def backward(self, op: LayerOp, grad_out: Tensor, x: Tensor, feedback: Tensor, output: Tensor | None,
                 needs: tuple[bool, bool, bool]):
        _, gw, gb = op.grads(grad_out, x, feedback, (False, needs[1], needs[2]))
        gx = None
        if needs[0]:
            bus = self._host[0].bus
            if bus is None or bus.error is None:
                raise DFAWiringError(
                    "a 'dfa' layer ran backward without the network output error. Call "
                    "nni_bio.enable_dfa(model) once after building the model, and back-propagate a loss "
                    "computed from the model's (main) output."
                )
            error = bus.error
            if error.shape[0] != x.shape[0]:
                raise DFAWiringError(
                    f"output error has batch size {error.shape[0]} but the layer input has {x.shape[0]}: "
                    "the DFA bus holds the error of another forward pass"
                )
            features = math.prod(x.shape[1:])
            proj = self.projection(error.shape[1], features, x.device, grad_out.dtype)
            gx = (error.to(grad_out.dtype) @ proj).view(x.shape)
        return gx, gw, gb

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state


class DirectFeedbackAlignment(LearningRule):
    info = RuleInfo(
        name="dfa",
        family="direct",
        summary="direct feedback alignment: fixed random projection of the output error (needs enable_dfa)",
        paper="Nøkland 2016, arXiv 1609.01596",
        api_version=1,
        needs_global_error=True,
    )

    def feedback(self, layer: RuleLayer) -> Feedback:
        return DirectProjectionFeedback(layer, layer.seed)
