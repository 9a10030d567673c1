"""Replace a module's method (``forward``, a VAE's ``decode``) for a ``with`` block, and always put it back."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

_MISSING = object()

Handler = Callable[..., Any]
"""``handler(original_method, *args, **kwargs)``: what the hooked call returns instead."""


class MethodHook:
    """Route every call of ``module.<method>`` through ``handler`` while the hook is installed.

    The handler receives the module's original bound method followed by every positional and
    keyword argument of the call, untouched, so it can run the original (untiled) path with all
    arguments (``feat_cache``, ``feat_idx``, ``first_chunk``, ...) or its own. The hook stores its
    state on itself, not on the module; on exit the module's attribute is restored to exactly
    what it was (an instance attribute another pack installed stays; no attribute left behind
    otherwise), on every path, exceptions and interrupts included.
    """

    def __init__(self, module: torch.nn.Module, handler: Handler, method: str = "forward") -> None:
        self.module = module
        self.handler = handler
        self.method = method
        self._saved: Any = None
        self._installed = False

    def install(self) -> MethodHook:
        """Install the hook; refuses to install twice."""
        if self._installed:
            raise RuntimeError(f"hook already installed on {type(self.module).__name__}.{self.method}")
        self._saved = self.module.__dict__.get(self.method, _MISSING)
        original = getattr(self.module, self.method)

        @functools.wraps(original)
        def hooked(*args: Any, **kwargs: Any) -> Any:
            return self.handler(original, *args, **kwargs)

        setattr(self.module, self.method, hooked)
        self._installed = True
        return self

    def remove(self) -> None:
        """Restore the module's method exactly as it was before :meth:`install`."""
        if not self._installed:
            return
        if self._saved is _MISSING:
            self.module.__dict__.pop(self.method, None)
        else:
            setattr(self.module, self.method, self._saved)
        self._saved = None
        self._installed = False

    def __enter__(self) -> MethodHook:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.remove()


class Hooks:
    """Several :class:`MethodHook` objects sharing one ``handler``, installed and removed together:
    all of them or none (an install that fails part-way removes what it installed)."""

    def __init__(self, handler: Handler, hooks: list[MethodHook]) -> None:
        self.handler = handler
        self.hooks = hooks

    def install(self) -> Hooks:
        """Install every hook, or none."""
        done: list[MethodHook] = []
        try:
            for hook in self.hooks:
                done.append(hook.install())
        except BaseException:
            for hook in reversed(done):
                hook.remove()
            raise
        return self

    def remove(self) -> None:
        """Remove every hook, in reverse order of installation."""
        for hook in reversed(self.hooks):
            hook.remove()

    def __enter__(self) -> Hooks:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.remove()
