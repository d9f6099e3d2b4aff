"""Run a function eagerly inside ``torch.compile``'d code without importing ``torch._dynamo`` up front.

A rule with host state (brSF's step counter) must not be traced: dynamo would guard on the Python int
and compile the graph again at every step. ``torch.compiler.disable`` keeps a function out of the
graph, but applying it imports ``torch._dynamo``, which costs a trial that never compiles about a
second of start-up (``benchmarks/search_cost.py``). :func:`eager_under_compile` defers it: the
returned function calls ``fn`` directly in eager mode, and under tracing calls
``torch.compiler.disable(fn)``, made when ``torch._dynamo`` is first imported (by whoever imports it;
at once if it already is). Nothing else of the import system changes.

Example:
    >>> from nni_bio.core.eager_under_compile import eager_under_compile
    >>> step = eager_under_compile(lambda counter: counter + 1)
    >>> step(1)
    2
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])
_DYNAMO = "torch._dynamo"
_waiting: list[Callable[[], None]] = []


class _AfterDynamoImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: hands ``torch._dynamo``'s own spec back with a loader that, once the module
    has run, makes the disabled functions that were asked for."""

    def find_spec(self, name: str, path: Any, target: ModuleType | None = None) -> ModuleSpec | None:
        if name != _DYNAMO:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            while _waiting:
                _waiting.pop(0)()

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _when_dynamo_is_imported(callback: Callable[[], None]) -> None:
    module = sys.modules.get(_DYNAMO)
    if module is not None and getattr(getattr(module, "__spec__", None), "_initializing", False) is False:
        callback()
        return
    _waiting.append(callback)
    if not any(isinstance(finder, _AfterDynamoImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterDynamoImport())


def eager_under_compile(fn: F) -> F:
    """``fn``, run eagerly (never traced, never guarded on) when called from ``torch.compile``'d code."""
    disabled: list[Callable[..., Any]] = []
    _when_dynamo_is_imported(lambda: disabled.append(torch.compiler.disable(fn)))

    def call(*args: Any, **kwargs: Any) -> Any:
        if torch.compiler.is_compiling():
            return disabled[0](*args, **kwargs)
        return fn(*args, **kwargs)

    # no functools.wraps: its __wrapped__ would let tools unwrap to the traced function
    call.__name__, call.__qualname__, call.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    return call  # type: ignore[return-value]
