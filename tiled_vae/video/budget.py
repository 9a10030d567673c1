"""What the video path needs on the device: a tile's working set and time cache, the latent-size
intermediates around the middle attention, the output."""

from __future__ import annotations

import torch

from ..policy import WORKSPACE_FACTOR, Needs
from .program import CACHE_T, CausalStage, ClipShape, StageRun

ACTIVATIONS = 4
"""Tensors of a stage's size alive at its peak besides its output: the input with the cached frames
prepended, its normalised and activated copies and the padded copy a causal convolution makes."""


def tile_bytes_per_pixel(stages: list[CausalStage], frames: int, batch: int, size: int) -> float:
    """Device bytes per full-resolution pixel of a tile that runs ``stages`` on chunks of ``frames``
    input frames (``size`` bytes per value): the heaviest stage's activations plus the tile's whole
    time cache (every stage's entries stay while the tile runs), with the workspace allowance.

    Per stage at input level ``k`` (``4**k`` full-resolution pixels per pixel):
    :data:`ACTIVATIONS` copies of the widest side over the chunk's frames plus :data:`CACHE_T`
    cached ones, and the output twice (result and the cut the next stage reads); each cache
    entry holds :data:`CACHE_T` frames of the widest side.
    """
    worst = cache = 0.0
    f = frames
    for s in stages:
        wide = max(s.c_in, s.c_out)
        f_out = f * s.time_factor
        activations = ACTIVATIONS * wide * (f + CACHE_T) / 4**s.level
        output = 2 * s.c_out * f_out / 4**s.out_level
        worst = max(worst, activations + output)
        cache += s.slots * CACHE_T * wide / 4 ** min(s.level, s.out_level)
        f = f_out
    return (worst + cache) * size * batch * WORKSPACE_FACTOR


def clip_needs(runs: list[StageRun], batch: int, shape: ClipShape, dtype: torch.dtype, untiled: float | None) -> Needs:
    """A whole tile-major decode or encode of a batch of ``batch`` fed to the module as ``shape``
    says (its chunks, full size and output frames).

    ``per_pixel``: the heaviest tiled run's tile. ``fixed``: the latent-size outputs of the runs
    before the last, for every chunk (a run's input and output at once), plus the attention's keys
    and values for one chunk. ``store``: the output.
    """
    size = torch.finfo(dtype).bits // 8
    full, chunks, out_frames = shape.full, len(shape.chunks), shape.out_frames
    per_pixel = keys_values = 0.0
    between: list[float] = [0.0]
    f = max(b - a for a, b in shape.chunks)
    for run in runs:
        last = run.stages[-1]
        px = (full[0] >> last.out_level) * (full[1] >> last.out_level)
        if run.tiled:
            per_pixel = max(per_pixel, tile_bytes_per_pixel(run.stages, f, batch, size))
        else:
            keys_values = max(keys_values, 2 * batch * last.c_out * f * px * size)
        for s in run.stages:
            f *= s.time_factor
        between.append(batch * last.c_out * chunks * f * px * size)
    between[-1] = 0.0  # the last run writes the output, counted below
    fixed = max(a + b for a, b in zip(between, between[1:], strict=False)) + keys_values
    last = runs[-1].stages[-1]
    output = batch * last.c_out * out_frames * (full[0] >> last.out_level) * (full[1] >> last.out_level) * size
    own = per_pixel * full[0] * full[1] + fixed + output
    return Needs(
        untiled=own if untiled is None else untiled,
        per_pixel=per_pixel,
        fixed=fixed,
        store=output,
        source="counted" if untiled is None else "the host's estimate",
    )
