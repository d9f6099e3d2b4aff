"""``--compile``: a network's forward and backward through ``torch.compile``, checked to build on this machine.

The default backend, ``inductor``, generates C++ (CPU) or Triton (GPU) kernels; where it cannot build
(no C++ compiler, an unsupported platform), :func:`usable_backend` says so once and falls back to
``aot_eager``, which traces the same graphs (forward and backward, rule backwards included) without
generating code. Rule layers compile as they are: their custom autograd functions are traced, and
DFA's error bus breaks the graph where the output error is injected. Host state stays out of the
graph: before each call of the compiled network, :func:`compile_model` calls ``stage_for_compile(weight,
training)`` on every rule layer's feedback that has one (brSF: its step counter advances and this step's
magnitudes become a buffer the graph reads), so such a layer neither breaks the graph nor makes it
recompile per step. Under a plain ``torch.compile(model)`` (no staging) brSF still runs its step
eagerly, at the price of a graph break per layer.

Example:
    >>> import torch, nni_bio
    >>> from nni_bio.train.compiling import compile_model
    >>> net = compile_model(torch.nn.Sequential(nni_bio.get_rule("usf").linear(4, 2)), "aot_eager")
    >>> net(torch.randn(3, 4)).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import nn

#: what ``--compile`` accepts ("none": eager, the default)
BACKENDS = ("none", "inductor", "aot_eager")


@functools.lru_cache(maxsize=None)
def usable_backend(backend: str) -> str:
    """``backend`` when it builds here; ``aot_eager`` (with one warning) when ``inductor`` cannot."""
    if backend not in BACKENDS or backend == "none":
        raise ValueError(f"compile backend must be one of {', '.join(BACKENDS[1:])}, not {backend!r}")
    if backend != "inductor":
        return backend
    try:
        probe = torch.compile(lambda t: torch.relu(t) * 2 + 1, backend="inductor", fullgraph=True)
        probe(torch.ones(4))
    except Exception as exc:  # noqa: BLE001  (whatever stops inductor from building: said, then fall back)
        warnings.warn(f"torch.compile's inductor backend cannot build on this machine ({str(exc).splitlines()[0][:200]}); "
                      "compiling with aot_eager instead (traced graphs, no generated code)", stacklevel=2)
        return "aot_eager"
    return backend


def compile_model(model: nn.Module, backend: str = "inductor") -> nn.Module:
    """``torch.compile(model)`` with a backend that builds here; the parameters stay ``model``'s own.

    Rule layers with host state are staged before every call (see the module docstring): each of them
    advances once per call of the compiled network, whether or not that forward runs it.
    """
    compiled = torch.compile(model, backend=usable_backend(backend))
    compiled.register_forward_pre_hook(_stage_host_state(model))  # a hook of the wrapper: runs eagerly
    return compiled


def _stage_host_state(model: nn.Module):  # noqa: ANN202 (a forward pre-hook)
    from nni_bio.core.layers import RuleLayer

    def stage(module: nn.Module, args: object) -> None:
        for layer in model.modules():
            if isinstance(layer, RuleLayer):
                feedback = layer._modules["feedback"]
                if hasattr(feedback, "stage_for_compile"):
                    feedback.stage_for_compile(layer.weight, layer.training)

    return stage


__all__ = ["BACKENDS", "compile_model", "usable_backend"]
