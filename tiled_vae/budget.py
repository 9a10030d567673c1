"""How large a tile may be, and where the full-size activations are kept."""

from __future__ import annotations

import math

import torch

from .program import Program

DEFAULT_CPU_TILE = 1024
"""Tile side (full-resolution px) when no device memory figure is available (CPU runs)."""

WORKSPACE_FACTOR = 2.0
"""Allowance for convolution workspaces and allocator slack on top of the counted tensors."""


def bytes_per_pixel(program: Program, batch: int, dtype: torch.dtype) -> float:
    """Device bytes one full-resolution tile pixel costs in the heaviest window step.

    Per step at level ``k`` (``4**k`` full-res pixels per pixel there) a tile holds its input
    window in ``dtype`` and as the fp32 normalised copy, the module's output twice (result and the
    cropped copy) and the residual: ``(c_in * (s + 4) + c_out * 3 * s) / 4**k`` bytes, ``s`` the
    dtype size, times the workspace allowance.
    """
    size = torch.finfo(dtype).bits // 8
    worst = 0.0
    for step in program.window_steps():
        level = step.fine_level
        per = (step.c_in * (size + 4) + step.c_out * 3 * size) / 4**level
        worst = max(worst, per)
    return worst * batch * WORKSPACE_FACTOR


def store_bytes(program: Program, batch: int, full: tuple[int, int], dtype: torch.dtype) -> int:
    """Bytes of the full-size activations alive at once (input, temporary and output registers)."""
    size = torch.finfo(dtype).bits // 8
    worst = 0
    for step in program.window_steps():
        level = step.fine_level
        px = (full[0] >> level) * (full[1] >> level)
        worst = max(worst, px * (2 * step.c_in + step.c_out) * size)
    return worst * batch


def tile_from_memory(free_bytes: int, per_pixel: float, align: int, fraction: float = 0.5) -> int:
    """Largest aligned square tile whose working set fits in ``fraction`` of ``free_bytes``."""
    side = int(math.sqrt(max(0.0, free_bytes * fraction) / per_pixel))
    return max(align, side // align * align)


def oom_errors() -> tuple[type[BaseException], ...]:
    """The exception types torch raises when the compute device runs out of memory."""
    return tuple(e for e in (getattr(torch, "OutOfMemoryError", None), torch.cuda.OutOfMemoryError) if e)


def release_cached(device: torch.device) -> None:
    """Return the allocator's cached blocks after an out-of-memory error, before a retry."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def halved(tile: int, align: int) -> int:
    """Half the tile side, aligned down, never below ``align``: the next size after running out of memory."""
    return max(align, tile // 2 // align * align)
