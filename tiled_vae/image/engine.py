"""Run a :class:`~.program.Program` over a tile plan: exact, one pass, memory bounded by the tile.

Full-size activations between steps (the values of :mod:`.placement`) live in a
:class:`~.store.Store`: on the compute device while they fit its budget, else in page-locked host
memory, moved by side-stream copies that overlap the compute (the plan is then full-width bands).
Each tile of a window step reads its input window, runs, and writes its core; the next tile's
windows are fetched while it runs, and successive steps walk the tiles in opposite orders
(zigzag), so a step starts where the last one ended, on rows still on the device. GroupNorm
statistics of a value are pooled while its tiles are written (core pixels only, fp32) and used by
the step that normalises it. An attention step computes every key and value band by band onto the
compute device, then its queries band by band.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..attention import keys_and_values
from ..geometry import Rect, level_sizes, output_extent, rect_at_level
from ..policy import Progress
from .budget import attention_bytes, step_bytes
from .groupnorm import GroupStats, group_norm_with_stats
from .placement import Placement, StepValues, Value, place
from .program import AttentionStep, Program, WindowStep
from .store import Store
from .transfers import Backend, Copier


@dataclass
class RunOptions:
    """Where things run: ``device`` computes; full-size activations stay on it up to
    ``store_budget`` bytes, the rest goes to the host through ``backend`` (None: everything stays
    on ``device``, as on a CPU, which is its own host)."""

    device: torch.device
    store_budget: float = math.inf
    progress: Progress | None = None
    check_interrupt: Callable[[], None] | None = None
    backend: Backend | None = None


def input_window(step: WindowStep, core: Rect, in_size: tuple[int, int]) -> Rect:
    """The input pixels (at ``step.level``) that the output ``core`` depends on, clipped to the image.

    Outside the image the untiled layer sees its own zero padding, and so does the tile: the
    module pads the clipped window exactly where the image ends.
    """
    h, w = in_size
    r = step.reach
    if step.geometry == "same":
        y0, y1, x0, x1 = core.y0 - r, core.y1 + r, core.x0 - r, core.x1 + r
    elif step.geometry == "up":
        y0, y1 = (core.y0 - r) // 2, (core.y1 + r - 1) // 2 + 1
        x0, x1 = (core.x0 - r) // 2, (core.x1 + r - 1) // 2 + 1
    else:
        y0, y1, x0, x1 = 2 * core.y0, 2 * (core.y1 - 1) + 2 * r + 1, 2 * core.x0, 2 * (core.x1 - 1) + 2 * r + 1
    return Rect(max(0, y0), min(h, y1), max(0, x0), min(w, x1))


def residual_window(step: WindowStep, core: Rect, size: tuple[int, int]) -> Rect:
    """The residual pixels the output ``core`` adds: the core, widened by the shortcut's reach."""
    r = step.shortcut_reach if step.shortcut is not None else 0
    h, w = size
    return Rect(max(0, core.y0 - r), min(h, core.y1 + r), max(0, core.x0 - r), min(w, core.x1 + r))


def placement_for(program: Program, batch: int, full: tuple[int, int], dtype: torch.dtype, budget: float) -> Placement:
    """Where each value of a run lives for a device ``budget`` in bytes (see :func:`.placement.place`)."""
    return place(program, batch, full, torch.finfo(dtype).bits // 8, budget)


class Engine:
    """Executes one program on one input for one plan (see module docstring)."""

    def __init__(
        self, program: Program, plan: list[Rect], full_size: tuple[int, int], options: RunOptions, dtype: torch.dtype
    ):
        self.program = program
        self.plan = plan
        self.full = full_size
        self.sizes = level_sizes(full_size[0], full_size[1], program.levels)
        self.opt = options
        self.stats: dict[Value, GroupStats] = {}
        self.done = 0
        self.size = torch.finfo(dtype).bits // 8
        worst = max((step_bytes(s, self.size) / 4**s.fine_level for s in program.window_steps()), default=1.0)
        self.tile_bytes = max((r.area for r in plan), default=0) * worst  # the heaviest step on the largest tile
        self.cores = self._ordered_cores()
        self.total = sum(len(c) for c in self.cores if c is not None)
        self.total += sum(2 * len(self._bands(s)) for s in program.attention_steps())
        self.placement: Placement | None = None

    def _cores(self, step: WindowStep) -> list[Rect]:
        """The output cores of ``step``: the plan at its level, or the whole level when it fits in one tile.

        Low-resolution levels of a large image often fit in the tile budget whole (the step's own
        working set for the whole level is no larger than the heaviest step's on the largest tile);
        running them as one tile saves per-tile overhead and changes nothing else.
        """
        level = step.out_level
        h, w = self.sizes[level]
        fine_h, fine_w = self.sizes[step.fine_level]
        if fine_h * fine_w * step_bytes(step, self.size) <= self.tile_bytes:
            return [Rect(0, h, 0, w)] if h * w > 0 else []
        cores = [rect_at_level(r, level, self.full, self.sizes) for r in self.plan]
        return [c for c in cores if c.area > 0]

    def _ordered_cores(self) -> list[list[Rect] | None]:
        """Each window step's cores in the order they run: every step that has several walks them
        the opposite way to the last one that had several, so it starts on the tile that one ended on."""
        forward = True
        ordered: list[list[Rect] | None] = []
        for step in self.program.steps:
            if isinstance(step, AttentionStep):
                ordered.append(None)
                continue
            cores = self._cores(step)
            if len(cores) > 1:
                cores = cores if forward else cores[::-1]
                forward = not forward
            ordered.append(cores)
        return ordered

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """Run the whole program on ``x`` (never modified) and return the last value on ``x``'s device."""
        budget = self.opt.store_budget if self.opt.backend is not None else math.inf
        placement = placement_for(self.program, x.shape[0], self.full, x.dtype, budget)
        self.placement = placement
        copier = Copier(self.opt.backend, self.opt.device) if placement.spills() else None
        store = Store(placement, self.sizes, x.shape[0], x.dtype, copier)
        try:
            out = self._run(x, placement, store)
        except BaseException:
            store.abort()
            raise
        store.finish()
        return self.program.post(out) if self.program.post is not None else out

    def _run(self, x: torch.Tensor, placement: Placement, store: Store) -> torch.Tensor:
        store.bind(placement.input, x)
        keep = self._kept_rows(placement)
        for i, step in enumerate(self.program.steps):
            store.step = i
            io = placement.steps[i]
            groups = placement.norm_groups(i)
            if isinstance(step, AttentionStep):
                self._run_attention(step, io, groups, store)
            else:
                self._run_window(i, step, io, groups, store, keep)
            store.drop_kept_before(i)
            for value in placement.values:
                if value.last == i:
                    store.release(value)
                    self.stats.pop(value, None)
        out = placement.output
        h, w = self.sizes[out.level]
        return store.read(out, Rect(0, h, 0, w)).to(x.device).contiguous()

    def _reads(self, index: int, core: Rect, io: StepValues) -> list[tuple[Value, Rect]]:
        """What window step ``index`` reads for ``core``: its input window, then its residual's."""
        step = self.program.steps[index]
        reads = [(io.src, input_window(step, core, self.sizes[step.level]))]
        if io.residual is not None:
            reads.append((io.residual, residual_window(step, core, self.sizes[step.out_level])))
        return reads

    def _kept_rows(self, placement: Placement) -> dict[tuple[int, int], tuple[int, int]]:
        """For tile ``j`` of step ``i`` writing a host value, the rows of its core that step ``i + 1``
        reads in its first tile (kept on the device so they need no round trip)."""
        keep: dict[tuple[int, int], tuple[int, int]] = {}
        for i, io in enumerate(placement.steps[:-1]):
            nxt = self.cores[i + 1]
            if not io.dst.on_host or not nxt or self.cores[i] is None:
                continue
            rows = [r for v, r in self._reads(i + 1, nxt[0], placement.steps[i + 1]) if v is io.dst]
            if not rows:
                continue
            y0, y1 = min(r.y0 for r in rows), max(r.y1 for r in rows)
            for j, core in enumerate(self.cores[i]):
                a, b = max(y0, core.y0), min(y1, core.y1)
                if a < b:
                    keep[(i, j)] = (a, b)
        return keep

    def _input_stats(self, value: Value, norm: torch.nn.GroupNorm, store: Store) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled statistics of a step's input: kept from its producer, else gathered band by band
        (only for an input the call gives: no supported family normalises it first)."""
        stats = self.stats.get(value)
        if stats is None or stats.num_groups != norm.num_groups:
            stats = GroupStats(norm.num_groups)
            h, w = self.sizes[value.level]
            rows = max(1, int(self.tile_bytes // max(1, 2 * w * value.channels * self.size)))
            for y in range(0, h, rows):
                stats.add(store.read(value, Rect(y, min(h, y + rows), 0, w)))
            self.stats[value] = stats
        return stats.mean_rstd(norm.eps)

    def _run_window(
        self,
        index: int,
        step: WindowStep,
        io: StepValues,
        groups: int | None,
        store: Store,
        keep: dict[tuple[int, int], tuple[int, int]],
    ) -> None:
        in_size = self.sizes[step.level]
        mean_rstd = self._input_stats(io.src, step.norm, store) if step.norm is not None else None
        out_stats = GroupStats(groups) if groups is not None else None
        for j, core in enumerate(self.cores[index]):
            window = input_window(step, core, in_size)
            t = store.read(io.src, window)
            if mean_rstd is not None:
                t = group_norm_with_stats(t, step.norm, *mean_rstd, then=step.pre)
            else:
                for op in step.pre:
                    t = op(t)
            y = step.module(t)
            del t
            y = y[(..., *core.relative_to(output_extent(step.geometry, window, y.shape[-2:])).slices())]
            if io.residual is not None:
                y = y.add_(self._residual(step, store, io.residual, core))  # the module's own output: no copy
            self._put(store, io.dst, core, y, step.out_scale, out_stats, keep.get((index, j)))
            del y
        self._pooled(io.dst, out_stats)

    def _bands(self, step: AttentionStep) -> list[tuple[int, int]]:
        """Row bands of the attention's level, each given a quarter of a tile's bytes (at least one row).

        The keys and values stay on the device while the bands run, so a band gets less room than
        a tile: the step then peaks no higher than a window step while the keys and values take
        less than three quarters of a tile's bytes.
        """
        h, w = self.sizes[step.level]
        rows = max(1, int(self.tile_bytes // 4 // max(1.0, w * attention_bytes(step, self.size))))
        return [(y, min(h, y + rows)) for y in range(0, h, rows)]

    def _run_attention(self, step: AttentionStep, io: StepValues, groups: int | None, store: Store) -> None:
        b, w = store.batch, self.sizes[step.level][1]
        mean, rstd = self._input_stats(io.src, step.norm, store)
        bands = self._bands(step)

        def tokens(t: torch.Tensor) -> torch.Tensor:  # (B, C, rows, W) -> (B, heads, rows * W, C / heads)
            return t.reshape(b, step.heads, step.channels // step.heads, -1).transpose(-1, -2)

        def project(y0: int, y1: int) -> tuple[torch.Tensor, torch.Tensor]:
            n = group_norm_with_stats(store.read(io.src, Rect(y0, y1, 0, w)), step.norm, mean, rstd)
            return tokens(step.k(n)), tokens(step.v(n))

        keys, values = keys_and_values(bands, w, project, self._tick)
        out_stats = GroupStats(groups) if groups is not None else None
        for y0, y1 in bands:
            band = Rect(y0, y1, 0, w)
            src = store.read(io.src, band)
            # contiguous: the fused attention kernels need the last dimension dense (else: the N x N math path)
            q = tokens(step.q(group_norm_with_stats(src, step.norm, mean, rstd))).contiguous()
            o = torch.nn.functional.scaled_dot_product_attention(q, keys, values, scale=step.scale)
            del q
            y = step.proj(o.transpose(-1, -2).reshape(b, step.channels, y1 - y0, w))
            del o
            y = y.add_(src)
            del src
            self._put(store, io.dst, band, y, step.out_scale, out_stats)
            del y
        self._pooled(io.dst, out_stats)

    def _put(
        self,
        store: Store,
        value: Value,
        rect: Rect,
        y: torch.Tensor,
        out_scale: float,
        stats: GroupStats | None,
        keep: tuple[int, int] | None = None,
    ) -> None:
        """Write one tile's (or band's) output: scaled, stored at ``rect``, its statistics pooled, the
        tile counted (progress, interrupt)."""
        if out_scale != 1.0:
            y = y.div_(out_scale)
        store.write(value, rect, y, keep)
        if stats is not None:
            stats.add(y)
        store.tile_done()
        self._tick()

    def _pooled(self, value: Value, stats: GroupStats | None) -> None:
        """The statistics pooled while ``value`` was written replace any it had."""
        self.stats.pop(value, None)
        if stats is not None:
            self.stats[value] = stats

    def halo(self) -> int:
        """The widest context a step reads around a tile's core, in full-resolution pixels."""
        return max((s.reach << s.level for s in self.program.window_steps()), default=0)

    def halo_overhead(self) -> float:
        """Extra input the tiles read (and recompute) over an untiled run, as a fraction.

        Pure geometry: the sum over window steps and tiles of ``window area * input channels``
        against ``input area * input channels``; nothing runs.
        """
        tiled = plain = 0
        for step in self.program.window_steps():
            in_size = self.sizes[step.level]
            plain += in_size[0] * in_size[1] * step.c_in
            tiled += sum(input_window(step, core, in_size).area for core in self._cores(step)) * step.c_in
        return tiled / plain - 1 if plain else 0.0

    def _residual(self, step: WindowStep, store: Store, value: Value, core: Rect) -> torch.Tensor:
        window = residual_window(step, core, self.sizes[step.out_level])
        res = store.read(value, window)
        if step.shortcut is None:
            return res
        return step.shortcut(res)[(..., *core.relative_to(window).slices())]

    def _tick(self) -> None:
        self.done += 1
        if self.opt.progress is not None:
            self.opt.progress(self.done, self.total)
        if self.opt.check_interrupt is not None:
            self.opt.check_interrupt()


def _meet(a: Rect, b: Rect) -> bool:
    """True when the two rectangles share a pixel."""
    return a.y0 < b.y1 and b.y0 < a.y1 and a.x0 < b.x1 and b.x0 < a.x1
