"""What the 2D path needs on the device: a tile's working set, the attention's keys and values, the store."""

from __future__ import annotations

import torch

from ..policy import WORKSPACE_FACTOR, Needs
from .groupnorm import CHUNKS
from .placement import trace
from .program import AttentionStep, Program, WindowStep


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
    """Peak bytes of the full-size activations alive at once if all stayed on the device (the
    call's input, which is there already, not counted)."""
    return trace(program, batch, full, torch.finfo(dtype).bits // 8).device_bytes()


def image_needs(program: Program, x: torch.Tensor, full: tuple[int, int], untiled: float | None) -> Needs:
    """What a call of ``program`` on ``x`` needs on the device (see :class:`~..policy.Needs`).

    Without the host's estimate, the untiled peak is taken as the heaviest step's working set over
    the whole image plus the attention's keys and values.
    """
    size = torch.finfo(x.dtype).bits // 8
    batch = x.shape[0]
    per_pixel = bytes_per_pixel(program, batch, x.dtype)
    keys_values = sum(
        2 * (full[0] >> s.level) * (full[1] >> s.level) * s.channels * size * batch for s in program.attention_steps()
    )
    own = per_pixel * full[0] * full[1] + keys_values
    return Needs(
        untiled=own if untiled is None else untiled,
        per_pixel=per_pixel,
        fixed=keys_values,
        store=store_bytes(program, batch, full, x.dtype),
        source="counted" if untiled is None else "the host's estimate",
    )
