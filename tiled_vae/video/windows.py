"""The windows a tile reads through a run of video stages, and running the stages on them.

A tile's core is the part of the output it owns. Walking the stages backwards, each stage's input
window is what its output region (the next stage's window, or the core for the last stage) depends
on: the region grown by the stage's reach and mapped through its resampling. The window therefore
shrinks stage by stage towards the output, to what the rest of the path still needs, so a tile
recomputes little beyond its core. Everything is derived from the stages' measured reach; nothing
is a constant typed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..geometry import Rect, output_extent
from .program import CausalStage

UNBOUNDED = (1 << 30, 1 << 30)
"""A frame size no window reaches: windows computed against it are not clipped."""


def stage_window(stage: CausalStage, core: Rect, in_size: tuple[int, int]) -> Rect:
    """The input pixels (at ``stage.level``) that the output ``core`` depends on, clipped to the frame.

    Outside the frame the untiled stage sees its own zero padding, and so does the window. Windows
    of a ``down`` stage start and end on even pixels, so the stride-2 grid (and a 2x2 average
    shortcut) lines up with the untiled one.
    """
    ri, ro = stage.reach_in, stage.reach_out

    def span(a: int, b: int, size: int) -> tuple[int, int]:
        if stage.geometry == "same":
            lo, hi = a - ri - ro, b + ri + ro
        elif stage.geometry == "up":
            lo, hi = (a - ro) // 2 - ri, -((-(b + ro)) // 2) + ri
        else:
            lo, hi = 2 * a - ri, 2 * (b - 1) + 2 * ro + 1 + ri
            lo, hi = lo - lo % 2, hi + hi % 2
        return max(0, lo), min(size, hi)

    y0, y1 = span(core.y0, core.y1, in_size[0])
    x0, x1 = span(core.x0, core.x1, in_size[1])
    return Rect(y0, y1, x0, x1)


def predicted_extent(stage: CausalStage, window: Rect) -> Rect:
    """Where the stage's output for the input ``window`` lies at its output level, before running it."""
    if stage.geometry == "same":
        return window
    if stage.geometry == "up":
        return Rect(2 * window.y0, 2 * window.y1, 2 * window.x0, 2 * window.x1)
    return Rect(window.y0 // 2, window.y1 // 2, window.x0 // 2, window.x1 // 2)


@dataclass(frozen=True)
class Chain:
    """One tile's path through a run of stages: ``windows[k]`` is stage ``k``'s input window (at its
    level), ``keeps[k]`` the part of its output the rest needs (the next window; the tile's core
    for the last stage)."""

    windows: list[Rect]
    keeps: list[Rect]

    @property
    def core(self) -> Rect:
        """The tile's core at the run's output level."""
        return self.keeps[-1]


def chain_for(stages: list[CausalStage], core: Rect, sizes: list[tuple[int, int]]) -> Chain:
    """The windows of ``stages`` whose last output is ``core``; ``sizes[level]`` is the frame size
    at each level (pass :data:`UNBOUNDED` sizes for unclipped windows)."""
    windows: list[Rect] = []
    keeps: list[Rect] = []
    need = core
    for stage in reversed(stages):
        keeps.append(need)
        need = stage_window(stage, need, sizes[stage.level])
        windows.append(need)
    return Chain(windows[::-1], keeps[::-1])


def halo(stages: list[CausalStage]) -> int:
    """Context (input-level pixels each side) the run reads around a tile's core, from the stages'
    reach: the first window of an interior tile minus its core mapped to the input level."""
    first, last = stages[0].level, stages[-1].out_level
    a = 1 << 20  # far from any border; a multiple of every level's scale
    core = Rect(a, a + (1 << 8), a, a + (1 << 8))
    window = chain_for(stages, core, [UNBOUNDED] * (max(first, last) + 1)).windows[0]
    shift = last - first
    mapped = Rect(*(v << shift if shift > 0 else v >> -shift for v in (core.y0, core.y1, core.x0, core.x1)))
    return max(mapped.y0 - window.y0, window.y1 - mapped.y1, mapped.x0 - window.x0, window.x1 - mapped.x1)


def run_chain(
    stages: list[CausalStage],
    chain: Chain,
    x: torch.Tensor,
    sizes: list[tuple[int, int]],
    cache: list[Any] | None,
    counter: list[int],
    first_chunk: bool,
) -> torch.Tensor:
    """Run ``stages`` on ``x`` (the first window of ``chain``) and return the output over its core.

    Each stage runs its real submodules on its window with the given time cache, and its output is
    cut to what the next stage reads. A Wan 2.2 group's shortcut reads the group's input, kept
    over the group's first window.
    """
    kept: tuple[torch.Tensor, Rect] | None = None
    h = x
    for stage, window, keep in zip(stages, chain.windows, chain.keeps, strict=True):
        if stage.keeps_input:
            kept = (h, window)
        y = stage.fn(h, cache, counter, first_chunk)
        extent = output_extent(stage.geometry, window, y.shape[-2:])
        y = y[(..., *keep.relative_to(extent).slices())]
        if stage.shortcut is not None:
            if kept is None:
                raise RuntimeError(f"{stage.name}: no group input was kept for its shortcut")
            y = y + _shortcut(stage, stage.shortcut, kept, keep, sizes[stage.level], first_chunk, cache is not None)
            kept = None
        h = y
    return h


def _shortcut(
    stage: CausalStage,
    shortcut: Callable[[torch.Tensor, bool, bool], torch.Tensor],
    kept: tuple[torch.Tensor, Rect],
    keep: Rect,
    in_size: tuple[int, int],
    first_chunk: bool,
    cached: bool,
) -> torch.Tensor:
    """A group's pixel-shuffle shortcut of its kept input (at the level ``stage`` reads, of size
    ``in_size``), over the output region ``keep``."""
    source, window = kept
    if stage.geometry == "up":
        src = Rect(keep.y0 // 2, -(-keep.y1 // 2), keep.x0 // 2, -(-keep.x1 // 2))
        extent = Rect(2 * src.y0, 2 * src.y1, 2 * src.x0, 2 * src.x1)
    elif stage.geometry == "down":
        h, w = in_size
        src = Rect(2 * keep.y0, min(h, 2 * keep.y1), 2 * keep.x0, min(w, 2 * keep.x1))
        extent = Rect(keep.y0, keep.y0 + src.height // 2, keep.x0, keep.x0 + src.width // 2)
    else:
        src = extent = keep
    if not window.contains(src):
        raise RuntimeError(f"{stage.name}: the group's window {window} does not hold its shortcut's input {src}")
    y = shortcut(source[(..., *src.relative_to(window).slices())], first_chunk, cached)
    return y[(..., *keep.relative_to(extent).slices())]


def recomputed_share(stages: list[CausalStage], chains: list[Chain], sizes: list[tuple[int, int]]) -> float:
    """Extra input the tiles read (and recompute) over an untiled run of ``stages``, as a fraction
    (geometry only: window areas times input channels)."""
    tiled = plain = 0
    for k, stage in enumerate(stages):
        h, w = sizes[stage.level]
        plain += h * w * stage.c_in
        tiled += sum(c.windows[k].area for c in chains) * stage.c_in
    return tiled / plain - 1 if plain else 0.0
