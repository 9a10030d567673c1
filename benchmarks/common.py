"""Shared helpers for the benchmarks: loading the pack, random full-size VAEs, timing and error figures."""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

PACK_ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_pack(name: str = "quadtree_tile") -> Any:
    """Import the repository as a package, the way ComfyUI imports a custom-node folder."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def randomise_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Deterministic fan-in-scaled uniform weights, unit norm scales, zero biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if p.ndim >= 2:
                bound = 1.0 / math.sqrt(p[0].numel())
                p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=g))
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
    return module.eval()


SDXL_CLASS_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
}
"""diffusers ``AutoencoderKL`` arguments of the SD/SDXL architecture (128-512 channels, 8x, 4 latent channels)."""


def sdxl_class_vae() -> torch.nn.Module:
    """diffusers ``AutoencoderKL`` with the SD/SDXL architecture and deterministic random weights."""
    from diffusers import AutoencoderKL

    return randomise_(AutoencoderKL(**SDXL_CLASS_CONFIG))


def measure(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[torch.Tensor, float, float | None]:
    """Run ``fn`` once; return its output, seconds, and peak device GiB above the start (None on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**30 if device.type == "cuda" else None
    return out, seconds, peak


def errors(out: torch.Tensor, ref: torch.Tensor, value_range: float = 2.0) -> dict[str, float]:
    """Max abs difference and PSNR (peak = ``value_range``, the [-1, 1] output span) in fp32."""
    d = (out.float() - ref.float()).to(ref.device)
    mse = float(d.square().mean())
    return {
        "max_abs": float(d.abs().max()),
        "psnr_db": float("inf") if mse == 0 else 10 * math.log10(value_range**2 / mse),
    }


def emit(**row: Any) -> None:
    """Print one JSON line of figures (what every benchmark outputs) and flush it at once."""
    sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()


def device_and_dtype(device: str | None, dtype: str | None) -> tuple[torch.device, torch.dtype]:
    """The compute device (CUDA when present) and dtype (bf16 on CUDA, fp32 on CPU) unless given.

    TF32 is switched off on CUDA: it alone leaves ~7e-4 between differently shaped fp32 runs, which
    would hide what tiling does.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    name = dtype or ("bf16" if dev.type == "cuda" else "fp32")
    return dev, {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]
