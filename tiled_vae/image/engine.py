"""Run a :class:`~.program.Program` over a tile plan: exact, one pass, memory bounded by the tile.

Full-size activations between steps live on a *store* device (the compute device when they fit,
else the CPU); each tile of a window step copies its input window to the compute device, runs,
and writes its core back. GroupNorm statistics of a register are pooled while its tiles are
written (core pixels only, fp32) and used by the step that normalises it. An attention step
computes every key and value band by band onto the compute device, then its queries band by band.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..attention import keys_and_values
from ..geometry import Rect, level_sizes, output_extent, rect_at_level
from ..policy import Progress
from .budget import attention_bytes, step_bytes
from .groupnorm import GroupStats, group_norm_with_stats
from .program import AttentionStep, Program, Step, WindowStep


@dataclass
class RunOptions:
    """Where things run: ``device`` computes, ``store`` holds the full-size activations."""

    device: torch.device
    store: torch.device
    progress: Progress | None = None
    check_interrupt: Callable[[], None] | None = None


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


def _dead_after(program: Program, index: int) -> set[str]:
    """Registers that no step after ``index`` reads before overwriting them."""
    names = {n for s in program.steps[: index + 1] for n in (s.src, s.dst)}
    dead = set()
    for name in names:
        for later in program.steps[index + 1 :]:
            reads = {later.src} | ({later.residual} if isinstance(later, WindowStep) and later.residual else set())
            if name in reads:
                break
            if later.dst == name:
                dead.add(name)
                break
        else:
            dead.add(name)
    return dead - {program.steps[-1].dst} if index == len(program.steps) - 1 else dead


def _norm_groups(program: Program, index: int) -> int | None:
    """Groups of the GroupNorm that will read what step ``index`` writes, if any."""
    dst = program.steps[index].dst
    for later in program.steps[index + 1 :]:
        if later.src == dst and later.norm is not None:
            return later.norm.num_groups
        if later.src == dst or later.dst == dst:
            return None
    return None


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
        self.regs: dict[str, torch.Tensor] = {}
        self.owned: set[str] = set()
        self.stats: dict[str, GroupStats] = {}
        self.done = 0
        self.size = torch.finfo(dtype).bits // 8
        worst = max((step_bytes(s, self.size) / 4**s.fine_level for s in program.window_steps()), default=1.0)
        self.tile_bytes = max((r.area for r in plan), default=0) * worst  # the heaviest step on the largest tile
        self.total = sum(len(self._cores(s)) for s in program.window_steps())
        self.total += sum(2 * len(self._bands(s)) for s in program.attention_steps())

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

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """Run the whole program on ``x`` (never modified) and return the last register."""
        self.regs["x"] = x
        for i, step in enumerate(self.program.steps):
            groups = _norm_groups(self.program, i)
            if isinstance(step, AttentionStep):
                self._run_attention(step, groups)
            else:
                self._run_window(step, groups)
            for name in _dead_after(self.program, i):
                self.regs.pop(name, None)
                self.stats.pop(name, None)
        out = self.regs[self.program.steps[-1].dst].to(x.device)
        return self.program.post(out) if self.program.post is not None else out

    def _write(self, name: str, value: torch.Tensor, stats: GroupStats | None) -> None:
        """Bind a register to a tensor this engine allocated (so it may later be updated in place),
        with the statistics pooled while it was written, if any."""
        self.regs[name] = value
        self.stats.pop(name, None)
        if stats is not None:
            self.stats[name] = stats
        self.owned.add(name)

    def _input_stats(self, step: Step, norm: torch.nn.GroupNorm) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled statistics of the step's input: kept from its producer, else gathered tile by tile."""
        stats = self.stats.get(step.src)
        if stats is None or stats.num_groups != norm.num_groups:
            stats = GroupStats(norm.num_groups)
            src = self.regs[step.src]
            h, w = src.shape[-2:]
            rows = max(1, int(self.tile_bytes // max(1, 2 * w * src.shape[1] * self.size)))
            for y in range(0, h, rows):
                stats.add(src[..., y : y + rows, :].to(self.opt.device))
            self.stats[step.src] = stats
        return stats.mean_rstd(norm.eps)

    def _run_window(self, step: WindowStep, groups: int | None) -> None:
        src = self.regs[step.src]
        in_size = tuple(src.shape[-2:])
        mean_rstd = self._input_stats(step, step.norm) if step.norm is not None else None
        out_stats = GroupStats(groups) if groups is not None else None
        inplace = (
            step.residual == step.dst
            and step.shortcut_reach == 0
            and step.dst in self.owned
            and self.regs[step.dst].shape[1] == step.c_out
        )
        if not inplace and step.dst not in (step.src, step.residual):
            self.regs.pop(step.dst, None)  # free the old value before the new one is allocated
        dst = self.regs[step.dst] if inplace else None
        res = self.regs[step.residual] if step.residual is not None else None
        for core in self._cores(step):
            window = input_window(step, core, in_size)
            t = src[(..., *window.slices())].to(self.opt.device)
            if mean_rstd is not None:
                t = group_norm_with_stats(t, step.norm, *mean_rstd, then=step.pre)
            else:
                for op in step.pre:
                    t = op(t)
            y = step.module(t)
            del t
            y = y[(..., *core.relative_to(output_extent(step.geometry, window, y.shape[-2:])).slices())]
            if res is not None:
                y = y.add_(self._residual(step, res, core))  # the module's own output: no copy needed
            if step.out_scale != 1.0:
                y = y.div_(step.out_scale)
            dst = self._put(dst, (..., *core.slices()), y, out_stats, self.sizes[step.out_level])
            del y
        self._write(step.dst, dst, out_stats)

    def _bands(self, step: AttentionStep) -> list[tuple[int, int]]:
        """Row bands of the attention's level, each given a quarter of a tile's bytes (at least one row).

        The keys and values stay on the device while the bands run, so a band gets less room than
        a tile: the step then peaks no higher than a window step while the keys and values take
        less than three quarters of a tile's bytes.
        """
        h, w = self.sizes[step.level]
        rows = max(1, int(self.tile_bytes // 4 // max(1.0, w * attention_bytes(step, self.size))))
        return [(y, min(h, y + rows)) for y in range(0, h, rows)]

    def _run_attention(self, step: AttentionStep, groups: int | None) -> None:
        src = self.regs[step.src]
        b, _, h, w = src.shape
        mean, rstd = self._input_stats(step, step.norm)
        bands = self._bands(step)

        def normed(y0: int, y1: int) -> torch.Tensor:
            return group_norm_with_stats(src[..., y0:y1, :].to(self.opt.device), step.norm, mean, rstd)

        def tokens(t: torch.Tensor) -> torch.Tensor:  # (B, C, rows, W) -> (B, heads, rows * W, C / heads)
            return t.reshape(b, step.heads, step.channels // step.heads, -1).transpose(-1, -2)

        def project(y0: int, y1: int) -> tuple[torch.Tensor, torch.Tensor]:
            n = normed(y0, y1)
            return tokens(step.k(n)), tokens(step.v(n))

        keys, values = keys_and_values(bands, w, project, self._tick)
        out_stats = GroupStats(groups) if groups is not None else None
        dst = None
        for y0, y1 in bands:
            q = tokens(step.q(normed(y0, y1)))
            o = torch.nn.functional.scaled_dot_product_attention(q, keys, values, scale=step.scale)
            del q
            y = step.proj(o.transpose(-1, -2).reshape(b, step.channels, y1 - y0, w))
            del o
            y = y.add_(src[..., y0:y1, :].to(self.opt.device))
            if step.out_scale != 1.0:
                y = y.div_(step.out_scale)
            dst = self._put(dst, (..., slice(y0, y1), slice(None)), y, out_stats, (h, w))
            del y
        self._write(step.dst, dst, out_stats)

    def _put(
        self,
        dst: torch.Tensor | None,
        where: tuple,
        y: torch.Tensor,
        stats: GroupStats | None,
        size: tuple[int, int],
    ) -> torch.Tensor:
        """Write one tile's output ``y`` at ``where`` in the full-size register ``dst`` (allocated on the
        store at ``size`` on first use), pool its statistics, report progress; return the register."""
        if dst is None:
            pin = self.opt.store.type == "cpu" and self.opt.device.type == "cuda"  # faster copies back
            dst = torch.empty((*y.shape[:2], *size), dtype=y.dtype, device=self.opt.store, pin_memory=pin)
        dst[where] = y.to(self.opt.store)
        if stats is not None:
            stats.add(y)
        self._tick()
        return dst

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

    def _residual(self, step: WindowStep, res: torch.Tensor, core: Rect) -> torch.Tensor:
        if step.shortcut is None:
            return res[(..., *core.slices())].to(self.opt.device)
        r = step.shortcut_reach
        h, w = res.shape[-2:]
        window = Rect(max(0, core.y0 - r), min(h, core.y1 + r), max(0, core.x0 - r), min(w, core.x1 + r))
        out = step.shortcut(res[(..., *window.slices())].to(self.opt.device))
        return out[(..., *core.relative_to(window).slices())]

    def _tick(self) -> None:
        self.done += 1
        if self.opt.progress is not None:
            self.opt.progress(self.done, self.total)
        self._interrupt()

    def _interrupt(self) -> None:
        if self.opt.check_interrupt is not None:
            self.opt.check_interrupt()
