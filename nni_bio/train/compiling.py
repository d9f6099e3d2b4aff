"""``--compile``: a network's forward and backward through ``torch.compile``, checked to build on this machine.

The default backend, ``inductor``, generates C++ (CPU) or Triton (GPU) kernels; where it cannot build
(no C++ compiler, an unsupported platform), :func:`usable_backend` says so once and falls back to
``aot_eager``, which traces the same graphs (forward and backward, rule backwards included) without
generating code. Rule layers compile as they are: their custom autograd functions are traced, and
DFA's error bus breaks the graph where the output error is injected. Host state stays out of the
graph: before each call of the compiled network, :func:`compile_model` calls ``stage_for_compile(weight,
training)`` on every rule layer's feedback that has one (brSF: its step counter advances and this step's
magnitudes become a buffer the graph reads) and ``unstage_for_compile()`` after it, so such a layer
neither breaks the graph nor makes it recompile per step, and no staged draw outlives its call. Under a
plain ``torch.compile(model)`` (no staging) brSF still runs its step eagerly, at the price of a graph
break per layer.

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

from nni_bio.core.error_bus import error_readers
from nni_bio.core.layers import RuleLayer

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

    Rule layers with host state are staged around every call (see the module docstring): each of them
    advances once per call of the compiled network, whether or not that forward runs it. A network with
    layers whose rule reads the output error (DFA) compiles with a graph break at each of them, and
    every such network ``benchmarks/compile_speed.py`` measured ran slower compiled than eager: a
    warning says so.
    """
    readers = len(error_readers(model))
    if readers:
        warnings.warn(f"{readers} layer(s) of this network read the output error from the error bus "
                      "(DFA); the compiled graph breaks at each of them, and such networks measured slower "
                      "compiled than eager (benchmarks/compile_speed.py). Leave --compile off for them "
                      "unless a measurement on your machine says otherwise.", stacklevel=2)
    compiled = torch.compile(model, backend=usable_backend(backend))
    staging = _HostStateStaging(model)
    # hooks of the wrapper, not of the model: they run eagerly, around the compiled forward
    compiled.register_forward_pre_hook(staging.stage)
    compiled.register_forward_hook(staging.unstage, always_call=True)
    return compiled


class _HostStateStaging:
    """Calls ``stage_for_compile`` on every rule layer's feedback that has one before a compiled call,
    and removes what was staged after it (the graph's saved tensors keep what its backward needs), so
    nothing staged outlives its call: another compiled or eager forward never reads a stale draw."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layers: list[nn.Module] | None = None  # the model's rule layers, found on the first call
        self.staged: list[nn.Module] = []

    def stage(self, module: nn.Module, args: object) -> None:
        if self.layers is None:
            self.layers = [m for m in self.model.modules() if isinstance(m, RuleLayer)]
        self.staged = []
        for layer in self.layers:
            feedback = layer._modules["feedback"]  # read each call: a rule swapped in place is seen
            if hasattr(feedback, "stage_for_compile"):
                feedback.stage_for_compile(layer.weight, layer.training)
                self.staged.append(feedback)

    def unstage(self, module: nn.Module, args: object, output: object) -> None:
        for feedback in self.staged:
            if hasattr(feedback, "unstage_for_compile"):
                feedback.unstage_for_compile()
        self.staged = []


__all__ = ["BACKENDS", "compile_model", "usable_backend"]
