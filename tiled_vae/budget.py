"""How large a tile may be, and where the full-size activations are kept."""

from __future__ import annotations

import math

import torch

from .groupnorm import CHUNKS
from .program import AttentionStep, Program, WindowStep

DEFAULT_CPU_TILE = 1024
"""Tile side (full-resolution px) when no device memory figure is available (CPU runs)."""

WORKSPACE_FACTOR = 1.5
"""Allowance for convolution workspaces and allocator slack on top of the counted tensors.

ComfyUI's tiled decode of one 512 px SDXL-class tile holds 386 MiB of tensors (counted with
``benchmarks/tensor_memory.py``) and peaked at 0.53 GiB on an H100 (../shared/bench): a ratio of 1.4.
"""


def step_bytes(step: WindowStep, size: int) -> float:
    """Device bytes one tile of ``step`` holds at its peak, per pixel of the step's finer level.

    With ``s`` the dtype size, a tile holds at most one of: the input window and its normalised
    copy, plus the float32 slices of the norm (``2 c_in s + c_in (s + 4) / CHUNKS``); the
    normalised input and the module's output (for an upsampling step its coarse input, the
    upsampled copy and the output; for a downsampling one the window, its padded copy and the
    output); the output and the residual window (plus the shortcut's output), plus the float32
    slices of the statistics. No allowance for workspaces (see :data:`WORKSPACE_FACTOR`).
    """
    c_in, c_out = step.c_in, step.c_out
    if step.geometry == "up":
        middle = c_in * size / 4 + c_in * size + c_out * size
    elif step.geometry == "down":
        middle = 2 * c_in * size + c_out * size / 4
    else:
        middle = (c_in + c_out) * size
    first = 2 * c_in * size + c_in * (size + 4) / CHUNKS if step.norm is not None else c_in * size
    last = c_out * size + c_out * (size + 4) / CHUNKS
    if step.residual is not None:
        last += step.c_residual * size + (c_out * size if step.shortcut is not None else 0)
    return max(first, middle, last)


def attention_bytes(step: AttentionStep, size: int) -> float:
    """Device bytes per query pixel of an attention band: its normalised input, query, attention
    output, projection and residual, plus the float32 slices of the norm and the statistics."""
    return step.channels * (5 * size + 2 * (size + 4) / CHUNKS)


def bytes_per_pixel(program: Program, batch: int, dtype: torch.dtype) -> float:
    """Device bytes one full-resolution tile pixel costs in the heaviest window step, allowance included.

    :func:`step_bytes` of each step divided by ``4**level`` (full-resolution pixels per pixel of
    its finer level), the largest, times the batch and :data:`WORKSPACE_FACTOR`. Checked against
    counted peaks in tests/tiled_vae/test_memory.py.
    """
    size = torch.finfo(dtype).bits // 8
    worst = max((step_bytes(s, size) / 4**s.fine_level for s in program.window_steps()), default=0.0)
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
