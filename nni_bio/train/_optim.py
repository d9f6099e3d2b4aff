"""``torch.optim`` optimizers whose methods do not import ``torch._dynamo`` while nothing compiles.

``Optimizer.step`` (through ``torch.optim.optimizer._use_grad_for_differentiable``) and
``add_param_group``, ``zero_grad``, ``state_dict``, ``load_state_dict`` (through
``torch._disable_dynamo``) import ``torch._dynamo`` on their first call, to mark graph breaks and
keep the compiler out of them. That import takes about as long as importing torch itself, a third
of a digits trial's start-up, in a process that never compiles anything.

:func:`lean` makes a subclass of an optimizer class whose five methods call torch's undecorated
ones while ``torch._dynamo`` is not imported (no compilation can be running then, and the
decorators would only set the grad mode, as done here, and mark breaks for a compiler that is not
there), and torch's decorated ones once it is (``torch.compile`` imports it). The optimizer is
otherwise the torch class itself: same state dict, same hooks, ``isinstance`` holds. Where torch's
methods do not have the expected wrappers, the subclass uses them unchanged.
"""

from __future__ import annotations

import functools
import inspect
import sys
from typing import Any

import torch

_DISABLED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")  # torch._disable_dynamo'd
_CACHE: dict[type, type] = {}


def _dynamo_loaded() -> bool:
    return "torch._dynamo" in sys.modules


def lean(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """The subclass of optimizer class ``cls`` described in the module docstring (cached)."""
    if cls in _CACHE:
        return _CACHE[cls]
    qualname = f"Lean{cls.__name__}"  # found by pickle through the module __getattr__ below
    namespace: dict[str, Any] = {"__module__": __name__, "__qualname__": qualname, "__doc__": cls.__doc__}
    raw_step = inspect.unwrap(cls.step)
    use_grad = getattr(sys.modules.get("torch.optim.optimizer"), "_use_grad_for_differentiable", None)
    if raw_step is not cls.step and use_grad is not None:
        torch_step = use_grad(raw_step)

        @functools.wraps(raw_step)
        def step(self, *args: Any, **kwargs: Any) -> Any:
            if _dynamo_loaded():
                return torch_step(self, *args, **kwargs)
            with torch.set_grad_enabled(self.defaults["differentiable"]):
                return raw_step(self, *args, **kwargs)

        namespace["step"] = step
    for name in _DISABLED:
        method = getattr(cls, name)
        raw = getattr(method, "__wrapped__", None)
        if raw is None:
            continue
        namespace[name] = _lazy(method, raw)
    _CACHE[cls] = subclass = type(cls.__name__, (cls,), namespace)  # __name__ as torch's: same repr, profile names
    return subclass


def __getattr__(name: str) -> type:
    """``LeanSGD``, ``LeanAdam``, ...: the lean subclass of ``torch.optim.<name without Lean>``."""
    base = getattr(torch.optim, name[4:], None) if name.startswith("Lean") else None
    if isinstance(base, type) and issubclass(base, torch.optim.Optimizer):
        return lean(base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _lazy(decorated: Any, raw: Any) -> Any:
    @functools.wraps(raw)
    def method(*args: Any, **kwargs: Any) -> Any:
        return (decorated if _dynamo_loaded() else raw)(*args, **kwargs)

    return method


__all__ = ["lean"]
