"""Peak bytes of live tensors on one device, counted op by op: a GPU's allocation figure without a GPU.

``torch.cuda.max_memory_allocated`` only exists on CUDA. :class:`TensorMemory` sees every tensor
an op returns while it is active (a ``TorchDispatchMode``) and, for those on the counted device,
adds its storage's bytes once and subtracts them when the storage is freed: what a GPU allocator
would hold for the same run, less convolution workspaces and allocator rounding.

Counted on the ``meta`` device nothing is computed, so a 4096² bf16 decode or an 81-frame video
takes seconds on a CPU, and what a run keeps off the compute device (an activation store on the
CPU, ComfyUI's output device) is really allocated on the CPU and not counted. Three things make a
meta run allocate what a GPU run allocates:

* a copy from meta to another device gives an uninitialised tensor there (meta has no values to
  copy; the values are never looked at, only the allocations);
* ``scaled_dot_product_attention`` gets a fused kernel's allocations (output and log-sum-exp;
  PyTorch's meta fallback would build the N x N score matrix that no GPU kernel builds);
* a meta tensor read as a Python scalar reads True / 1: the branch a finite input takes in an
  ``isfinite(x).all()`` check.

Checked against a real run on the CPU: the same peaks, to the byte. Against a GPU it can be far
off: on an H200 (the pack at 6601a9f, bf16, counts from bench_memory at fc519da) the pack's tiled
runs with the CPU store peaked 8-31x above their counts on stills (SDXL-class decode 2048²: 0.30
GiB counted, 4.2 measured; 4096²: 0.55 vs 16.8; Qwen-Image decode 1328²: 0.29 vs 2.2; 3072²: 0.50
vs 11.6) and 1.2x on the Wan 2.1 832x480x81 clip (1.01 vs 1.16); untiled runs 1.0-1.4x (SDXL
2048²: 6.0 vs 8.5; the clip: 3.95 vs 3.96). So the count is for tests of how memory grows with
image size (CI has no GPU); every memory figure quoted for users is
``torch.cuda.max_memory_allocated`` from a GPU run, or says it was not measured on a GPU.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

_SCALAR = torch.ops.aten._local_scalar_dense.default
_COPIES = (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default)


class _FusedAttentionOnMeta(TorchFunctionMode):
    """Runs ``scaled_dot_product_attention`` on meta tensors as a fused (flash) kernel allocates."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and args[0].device.type == "meta":
            q, k, v = args[:3]
            opts = {n: kwargs[n] for n in ("attn_mask", "scale") if n in kwargs}
            out, _lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q, k, v, kwargs.get("dropout_p", 0.0), kwargs.get("is_causal", False), **opts
            )
            return out
        return func(*args, **kwargs)


class TensorMemory(TorchDispatchMode):
    """Counts live tensor bytes on ``device`` while active: ``peak`` and ``current`` in bytes.

    Tensors that existed before entering (weights, inputs) are not counted. See the module
    docstring for what a ``meta`` run is given so that it allocates as a GPU run would.
    """

    def __init__(self, device: str = "meta"):
        super().__init__()
        self.device = torch.device(device)
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        self._attention = _FusedAttentionOnMeta()

    def __enter__(self) -> TensorMemory:
        self._attention.__enter__()
        try:
            return super().__enter__()
        except BaseException:
            self._attention.__exit__(None, None, None)
            raise

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._attention.__exit__(*exc)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is _SCALAR and args[0].device.type == "meta":
            return True if args[0].dtype == torch.bool else 1
        if func in _COPIES and _leaves_meta(func, args, kwargs):
            return _uninitialised_copy(func, args, kwargs)
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device == self.device:
                self._count(t)
        return out

    def _count(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key, size = id(storage), storage.nbytes()
        if size == 0 or key in self.live:
            return
        self.live[key] = size
        self.current += size
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key)


def _leaves_meta(func: Any, args: tuple, kwargs: dict) -> bool:
    """A copy whose source is on meta and whose destination is not."""
    if func is torch.ops.aten.copy_.default:
        return args[1].device.type == "meta" and args[0].device.type != "meta"
    target = kwargs.get("device")
    return args[0].device.type == "meta" and target is not None and torch.device(target).type != "meta"


def _uninitialised_copy(func: Any, args: tuple, kwargs: dict) -> torch.Tensor:
    """What the copy would return, with no values (meta has none to give)."""
    if func is torch.ops.aten.copy_.default:
        return args[0]
    src = args[0]
    return torch.empty(
        src.shape,
        dtype=kwargs.get("dtype") or src.dtype,
        device=kwargs["device"],
        pin_memory=bool(kwargs.get("pin_memory")),
    )


def counted_peak_gib(fn: Callable[[], Any]) -> float:
    """Run ``fn`` (on meta tensors) without autograd and return the peak GiB a GPU would hold for it."""
    with torch.no_grad(), TensorMemory() as counted:
        fn()
    return counted.peak / 2**30


def on_meta(build: Callable[[], torch.nn.Module], dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
    """A model built with no weights on the meta device, in ``dtype`` and eval mode (instant at full size)."""
    with torch.device("meta"):
        return build().to(dtype).eval()
