"""Where each full-size activation of a tiled run lives: on the compute device or in one pinned host arena.

The engine's registers ("x", "h") are rebound step by step; each binding is a :class:`Value`,
produced by one step (or the call's input) and read until its last reader. :func:`place` follows
the program once, without running it, gives every step its values, keeps on the device the
values that fit in a device budget (the smallest first: the coarse levels) and sends the rest
to the host, where :func:`arena_offsets` packs them into one buffer: values whose lifetimes do
not overlap share bytes, so a run page-locks its host memory once. When any value lives on the
host the tiles are full-width bands (:func:`band_plan`), so every window is a run of whole rows
and one contiguous block of a row-major host register.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..geometry import Rect, level_sizes
from .program import Program, WindowStep

ARENA_ALIGN = 4096
"""Byte alignment of every value in the host arena (a page: any dtype view, DMA-friendly starts)."""


@dataclass(eq=False)
class Value:
    """One binding of a register: ``channels`` x the size of ``level``, written by step ``produced``
    (-1: the call's input) and read up to step ``last`` (the number of steps: the run's output)."""

    index: int
    channels: int
    level: int
    produced: int
    last: int
    nbytes: int
    on_host: bool = False
    offset: int = 0

    def overlaps(self, other: Value) -> bool:
        """True when the two values are alive during a common step."""
        return self.produced <= other.last and other.produced <= self.last


@dataclass(frozen=True, eq=False)
class StepValues:
    """The values a step reads (``src``, ``residual``) and writes (``dst``); ``inplace`` when it
    updates its residual's tensor instead of writing a new one; ``norm_groups``: the groups of its
    own GroupNorm (None: it has none)."""

    src: Value
    residual: Value | None
    dst: Value
    inplace: bool
    norm_groups: int | None


@dataclass
class Placement:
    """Every value of one run, the values of each step, and where each value lives."""

    values: list[Value]
    steps: list[StepValues]
    arena_bytes: int = 0
    stats_gathered: list[int] = field(default_factory=list)
    """Steps whose GroupNorm input has no statistics pooled by its producer (they need an extra
    pass over that input); empty for every supported family."""

    @property
    def input(self) -> Value:
        return self.values[0]

    @property
    def output(self) -> Value:
        return self.steps[-1].dst

    def device_bytes(self) -> int:
        """Peak bytes of the device-resident values alive at once (the call's input excluded)."""
        return _peak(self.values, len(self.steps), on_host=False)

    def host_bytes(self) -> int:
        """Bytes of the pinned host arena."""
        return self.arena_bytes

    def spills(self) -> bool:
        """True when some value lives on the host."""
        return any(v.on_host for v in self.values)

    def norm_groups(self, index: int) -> int | None:
        """Groups of the GroupNorm that first reads what step ``index`` writes, if any, before
        that value is next updated in place: the producer pools these statistics as it writes."""
        value = self.steps[index].dst
        for later in self.steps[index + 1 :]:
            if later.src is value and later.norm_groups is not None:
                return later.norm_groups
            if later.dst is value:
                return None
        return None


def trace(program: Program, batch: int, full: tuple[int, int], dtype_size: int) -> Placement:
    """The values of ``program`` on a ``batch`` x ``full`` call, all on the device.

    A step updates its residual in place (as the engine does) when it adds the residual to its
    own output with no shortcut convolution reaching around the core, the residual is not the
    call's input and it has the output's channels.
    """
    sizes = level_sizes(full[0], full[1], program.levels)

    def new(channels: int, level: int, produced: int) -> Value:
        h, w = sizes[level]
        values.append(Value(len(values), channels, level, produced, produced, batch * channels * h * w * dtype_size))
        return values[-1]

    values: list[Value] = []
    current = {"x": new(program.in_channels, program.in_level, -1)}
    steps: list[StepValues] = []
    for i, step in enumerate(program.steps):
        src = current[step.src]
        src.last = i
        residual = current[step.residual] if isinstance(step, WindowStep) and step.residual else None
        if residual is not None:
            residual.last = i
        inplace = (
            isinstance(step, WindowStep)
            and residual is not None
            and step.residual == step.dst
            and step.shortcut_reach == 0
            and residual.produced >= 0
            and residual.channels == step.c_out
        )
        if inplace:
            dst = residual
        elif isinstance(step, WindowStep):
            dst = new(step.c_out, step.out_level, i)
        else:
            dst = new(step.channels, step.level, i)
        current[step.dst] = dst
        steps.append(StepValues(src, residual, dst, inplace, step.norm.num_groups if step.norm is not None else None))
    steps[-1].dst.last = len(program.steps)
    placement = Placement(values, steps)
    placement.stats_gathered = [
        i for i, s in enumerate(steps) if s.norm_groups is not None and not _pooled(placement, i)
    ]
    return placement


def _pooled(placement: Placement, index: int) -> bool:
    """True when the producer of step ``index``'s input pools the statistics that step needs."""
    src = placement.steps[index].src
    if src.produced < 0:
        return False
    return placement.norm_groups(src.produced) == placement.steps[index].norm_groups


def place(program: Program, batch: int, full: tuple[int, int], dtype_size: int, budget: float) -> Placement:
    """:func:`trace`, then the values that fit in ``budget`` device bytes on the device, the rest
    on the host (arena offsets assigned).

    The call's input is on the device already and not counted. Values are tried smallest first,
    so the coarse levels stay on the device and the full-resolution ones spill; a value goes to
    the device when, over its whole lifetime, the device values alive with it plus itself fit.
    """
    placement = trace(program, batch, full, dtype_size)
    if math.isinf(budget):
        return placement
    steps = len(placement.steps) + 1
    usage = [0] * steps
    for value in sorted(placement.values[1:], key=lambda v: (v.nbytes, v.produced)):
        span = range(value.produced, min(value.last, steps - 1) + 1)
        if max(usage[s] for s in span) + value.nbytes <= budget:
            for s in span:
                usage[s] += value.nbytes
        else:
            value.on_host = True
    placement.arena_bytes = arena_offsets([v for v in placement.values if v.on_host])
    return placement


def arena_offsets(values: list[Value]) -> int:
    """Give each value a byte offset in one arena, sharing bytes only between values whose
    lifetimes do not overlap; return the arena's size. Largest first, lowest free offset."""
    placed: list[Value] = []
    for value in sorted(values, key=lambda v: (-v.nbytes, v.produced)):
        size = _aligned(value.nbytes)
        rivals = sorted((v for v in placed if v.overlaps(value)), key=lambda v: v.offset)
        offset = 0
        for rival in rivals:
            if offset + size <= rival.offset:
                break
            offset = max(offset, rival.offset + _aligned(rival.nbytes))
        value.offset = offset
        placed.append(value)
    return max((v.offset + _aligned(v.nbytes) for v in placed), default=0)


def band_plan(full: tuple[int, int], tile: int, align: int) -> list[Rect]:
    """Full-width row bands with about a ``tile`` x ``tile`` tile's area each, cut on ``align``.

    The bands are near-equal, at least ``align`` rows tall (a very wide image then gets bands
    larger than the tile), and partition the image as a plan must.
    """
    h, w = full
    rows = max(align, tile * tile // max(1, w) // align * align)
    cells, per_band = -(-h // align), rows // align
    bands = -(-cells // per_band)
    cuts = [round(i * cells / bands) * align for i in range(bands + 1)]
    cuts[-1] = h
    return [Rect(cuts[i], cuts[i + 1], 0, w) for i in range(bands) if cuts[i + 1] > cuts[i]]


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ARENA_ALIGN) * ARENA_ALIGN


def _peak(values: list[Value], steps: int, on_host: bool) -> int:
    usage = [0] * (steps + 1)
    for v in values[1:]:
        if v.on_host == on_host:
            for s in range(v.produced, min(v.last, steps) + 1):
                usage[s] += v.nbytes
    return max(usage, default=0)
