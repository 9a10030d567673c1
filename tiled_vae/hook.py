"""Replace a module's ``forward`` for the duration of a ``with`` block, and always put it back."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

_MISSING = object()

Handler = Callable[..., Any]
"""``handler(original_forward, *args, **kwargs)``: what the hooked module returns instead."""


class ForwardHook:
    """Route every call of ``module`` through ``handler`` while the hook is installed.

    The handler receives the module's original bound ``forward`` followed by every positional and
    keyword argument of the call, untouched, so it can run the original (untiled) path with all
    arguments (``feat_cache``, ``feat_idx``, ``first_chunk``, ...) or its own. The hook stores its
    state on itself, not on the module; on exit the module's ``forward`` attribute is restored to
    exactly what it was (an instance attribute another pack installed stays; no attribute left
    behind otherwise), on every path, exceptions and interrupts included.
    """

    def __init__(self, module: torch.nn.Module, handler: Handler) -> None:
        self.module = module
        self.handler = handler
        self._saved: Any = None
        self._installed = False

    def install(self) -> ForwardHook:
        """Install the hook; refuses to install twice."""
        if self._installed:
            raise RuntimeError(f"hook already installed on {type(self.module).__name__}")
        self._saved = self.module.__dict__.get("forward", _MISSING)
        original = self.module.forward

        @functools.wraps(original)
        def hooked(*args: Any, **kwargs: Any) -> Any:
            return self.handler(original, *args, **kwargs)

        self.module.forward = hooked
        self._installed = True
        return self

    def remove(self) -> None:
        """Restore the module's ``forward`` exactly as it was before :meth:`install`."""
        if not self._installed:
            return
        if self._saved is _MISSING:
            self.module.__dict__.pop("forward", None)
        else:
            self.module.forward = self._saved
        self._saved = None
        self._installed = False

    def __enter__(self) -> ForwardHook:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.remove()
