"""Tile-major decode and encode of a recognised video VAE (:mod:`.hosts`): the pack owns the chunk loop.

The host's first step runs on the whole input (a 1x1x1 convolution, or Wan 2.2's patch fold). Then
the module's runs (:meth:`~.program.CausalProgram.runs`) go one after the other over every chunk:
a tiled run takes each tile in turn, gives it a time cache of its own and the window its path needs
(:mod:`.windows`), runs it over all chunks in order and writes its core into the run's output; the
middle attention, the one stage that must see the whole frame, runs chunk by chunk on the latent-
size output of the run before it. Then the host's last steps. A causal convolution's cache holds
only its own input's past, so running every chunk through one run before the next starts changes
nothing.

No full-resolution activation and no full-frame time cache exists at any time: the device holds the
latent-size outputs around the attention, one tile's working set and cache, and the output when it
lives there. The result equals the host's own method up to float rounding (same submodules, same
cache protocol per tile, windows no smaller than the path's reach, no blending).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from ..families import Unsupported
from ..geometry import Rect, level_sizes, rect_at_level
from ..planner import plan_for
from ..policy import Context, Decision, Needs, RunReport, decide, execute, log_untiled, program_or_reason, summary
from ..validation import check_input, checks_for
from .budget import clip_needs
from .hosts import Host
from .program import CausalProgram, ClipShape, StageRun
from .windows import Chain, chain_for, halo, recomputed_share, run_chain

log = logging.getLogger("comfyui-quadtree-tile.tiled_vae")


def run_host_call(ctx: Context, host: Host, original: Callable[..., Any], role: str, args: tuple, kwargs: dict) -> Any:
    """One call of the host's decode or encode method: checks, the policy's decision, then the host's
    own method (untiled) or the tile-major run; one log line."""
    module, family = host.part(role)
    what = f"{role} in {host.name}"
    ctx.report = report = RunReport(family=family.name)
    x = host.bind(role, args, kwargs)
    program, reason = program_or_reason(ctx.config, x is not None, family.name, lambda: family.build(module))
    if program is None or x is None:
        out = ctx.run_untiled(original, reason, args, kwargs)
        log_untiled(what, report)
        return out
    check_host_input(host, program, role, x)
    with torch.no_grad():  # never keep an autograd graph: the host's first step runs here
        clip = _Clip.decode(ctx, host, program, x) if role == "decode" else _Clip.encode(ctx, host, program, x)
    free = ctx.free_memory(x.device)
    decision = decide(ctx.config, clip.full, program.align, clip.needs, free)
    report.free, report.needs, report.reason = free, clip.needs, decision.reason

    def untiled() -> Any:
        report.tiled = False
        return original(*args, **kwargs)

    def tiled(tile: int) -> Any:
        with torch.no_grad():  # never keep an autograd graph across tiles
            out = clip(tile, decision)
            if role == "decode":
                return host.wrap_decode(host.after_decode(out), kwargs)
            return host.after_encode(out)

    try:
        out = execute(decision, untiled, tiled, clip.full, program.align, x.device, report)
    finally:
        host.reset()
    log.info(summary(what, report))
    return out


class _HostView:
    """The host's input as the checks see it: Wan 2.2 folds 2x2 pixels into the encoder's channels."""

    def __init__(self, program: CausalProgram, patch: int, role: str) -> None:
        fold = patch if role == "encode" else 1
        self.levels, self.in_level, self.out_level = program.levels, program.in_level, program.out_level
        self.in_channels = program.in_channels // fold**2
        self._align = program.align * fold

    @property
    def align(self) -> int:
        return self._align


def check_host_input(host: Host, program: CausalProgram, role: str, x: torch.Tensor) -> None:
    """Raise ValueError (saying what to do) when ``x`` cannot go through the host's ``role`` method,
    whose encoder or decoder is ``program``."""
    _, family = host.part(role)
    check_input(x, _HostView(program, host.patch, role), family, **checks_for(family))


def clip_shape(host: Host, program: CausalProgram, role: str, shape: tuple[int, ...]) -> ClipShape:
    """The chunks and sizes of the host's ``role`` method on an input of ``shape`` (B, C, T, H, W):
    decode one latent frame per chunk; encode the (patch-folded) input in chunks of 1, 4, 4, ...
    frames, dropping frames that do not fill a chunk, as the host drops them."""
    t, h, w = shape[2], shape[3], shape[4]
    if role == "decode":
        full = (h << program.levels, w << program.levels)
        return ClipShape([(i, i + 1) for i in range(t)], full, 1 + program.time_factor * (t - 1))
    chunks = [(0, 1)] + [(1 + 4 * (i - 1), 1 + 4 * i) for i in range(1, 1 + (t - 1) // 4)]
    return ClipShape(chunks, (h // host.patch, w // host.patch), len(chunks))


def clip_needs_of(
    host: Host, program: CausalProgram, role: str, x: torch.Tensor, estimate: float | None
) -> tuple[Needs, ClipShape]:
    """What the tile-major ``role`` of ``x`` needs, from shapes alone (nothing runs)."""
    shape = clip_shape(host, program, role, tuple(x.shape))
    return clip_needs(program.runs(), x.shape[0], shape, x.dtype, estimate), shape


class _Frames:
    """One run's output for every chunk, written tile by tile: the first tile's pieces are kept
    until the frame count of each chunk is known, then one tensor is allocated and filled."""

    def __init__(self, device: torch.device, pinned: bool) -> None:
        self.device, self.pinned = device, pinned
        self.out: torch.Tensor | None = None
        self.pieces: list[tuple[Rect, int, torch.Tensor]] = []
        self.counts: list[int] = []

    def put(self, core: Rect, chunk: int, t: int, y: torch.Tensor) -> None:
        """Write ``y``, chunk ``chunk``'s frames from ``t`` on over the tile's ``core``."""
        if self.out is None:
            self.pieces.append((core, t, y))
            if chunk == len(self.counts):
                self.counts.append(y.shape[2])
            return
        self.out[:, :, t : t + y.shape[2], core.y0 : core.y1, core.x0 : core.x1] = y.to(self.device)

    def tile_done(self, size: tuple[int, int]) -> None:
        """After the first tile: allocate the output (``size`` pixels) and place that tile."""
        if self.out is not None or not self.pieces:
            return
        y = self.pieces[0][2]
        shape = (*y.shape[:2], sum(self.counts), *size)
        self.out = torch.empty(shape, dtype=y.dtype, device=self.device, pin_memory=self.pinned)
        pieces, self.pieces = self.pieces, []
        for core, t, piece in pieces:
            self.out[:, :, t : t + piece.shape[2], core.y0 : core.y1, core.x0 : core.x1] = piece.to(self.device)

    def whole(self) -> torch.Tensor:
        """The output, every frame."""
        if self.out is None:
            raise RuntimeError("the tile plan produced no output")
        return self.out

    def chunks(self) -> list[torch.Tensor]:
        """The output, chunk by chunk (views)."""
        out = self.whole()
        starts = [sum(self.counts[:i]) for i in range(len(self.counts))]
        return [out[:, :, t : t + n] for t, n in zip(starts, self.counts, strict=True)]


class _Clip:
    """A whole decode or encode of one input: the program's runs over every chunk (see module)."""

    def __init__(
        self,
        ctx: Context,
        program: CausalProgram,
        x: torch.Tensor,
        shape: ClipShape,
        first_chunk: bool,
        estimate: float | None,
    ) -> None:
        self.ctx, self.program, self.x, self.first_chunk = ctx, program, x, first_chunk
        self.chunks, self.full = shape.chunks, shape.full
        self.sizes = level_sizes(self.full[0], self.full[1], program.levels)
        self.runs = program.runs()
        self.slots = program.slots_before(len(program.stages))
        self.needs: Needs = clip_needs(self.runs, x.shape[0], shape, x.dtype, estimate)
        self.done = 0
        self.total = 0

    @classmethod
    def decode(cls, ctx: Context, host: Host, program: CausalProgram, z: torch.Tensor) -> _Clip:
        """The decoder over ``z`` after the host's first convolution: one latent frame per chunk."""
        estimate = ctx.untiled_memory(z) if ctx.untiled_memory is not None else None
        shape = clip_shape(host, program, "decode", tuple(z.shape))
        return cls(ctx, program, host.before_decode(z), shape, host.first_chunk(), estimate)

    @classmethod
    def encode(cls, ctx: Context, host: Host, program: CausalProgram, pixels: torch.Tensor) -> _Clip:
        """The encoder over the host's (patch-folded) input in chunks of 1, 4, 4, ... frames."""
        estimate = ctx.untiled_memory(pixels) if ctx.untiled_memory is not None else None
        shape = clip_shape(host, program, "encode", tuple(pixels.shape))
        return cls(ctx, program, host.before_encode(pixels), shape, False, estimate)

    def __call__(self, tile: int, decision: Decision) -> torch.Tensor:
        """Run every run over every chunk with ``tile`` px tiles; the last run's output, whole."""
        config, align, report = self.ctx.config, self.program.align, self.ctx.report
        cell = align if self.program.in_level == 0 else 1
        plan = plan_for(config.planner, config.min_tile_size, self.x[:, :, 0], self.full, tile, align, cell)
        report.tiled, report.tile_size, report.plan = True, tile, plan
        tiled_runs = [r for r in self.runs if r.tiled]
        report.halo = max(halo(r.stages) << r.stages[0].level for r in tiled_runs)
        self.total = self.done + sum(len(plan) if r.tiled else 1 for r in self.runs) * len(self.chunks)
        if not self.runs[-1].tiled:
            raise Unsupported("the module does not end in spatially local stages")
        inputs = [self.x[:, :, a:b] for a, b in self.chunks]
        shares = []
        for run in self.runs[:-1]:
            if run.tiled:
                frames, share = self._tiles(run, inputs, plan, _Frames(self.x.device, False))
                inputs = frames.chunks()
                shares.append(share)
            else:
                inputs = self._whole(run, inputs)
        device, pinned = _output_device(decision, self.needs, self.x.device)
        report.store = str(device)
        frames, share = self._tiles(self.runs[-1], inputs, plan, _Frames(device, pinned))
        report.halo_overhead = max([*shares, share])
        return frames.whole()

    def _whole(self, run: StageRun, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """A run that sees the whole frame (the middle attention), chunk by chunk."""
        cache: list[Any] = [None] * self.slots
        outs = []
        for i, h in enumerate(inputs):
            counter = [run.first_slot]
            for stage in run.stages:
                h = stage.fn(h, cache, counter, self.first_chunk and i == 0)
            outs.append(h)
            self._tick()
        return outs

    def _tiles(
        self, run: StageRun, inputs: list[torch.Tensor], plan: list[Rect], frames: _Frames
    ) -> tuple[_Frames, float]:
        """A tiled run: each tile over every chunk with its own time cache, its core into ``frames``."""
        level = run.stages[-1].out_level
        chains = [chain_for(run.stages, rect_at_level(r, level, self.full, self.sizes), self.sizes) for r in plan]
        for chain in chains:
            cache: list[Any] = [None] * self.slots
            t = 0
            for i, h in enumerate(inputs):
                if i == len(inputs) - 1:
                    cache = _Spent(cache)
                y = self._chunk(run, chain, h, cache, self.first_chunk and i == 0)
                frames.put(chain.core, i, t, y)
                t += y.shape[2]
                del y
                self._tick()
            del cache
            frames.tile_done(self.sizes[level])
        return frames, recomputed_share(run.stages, chains, self.sizes)

    def _chunk(self, run: StageRun, chain: Chain, h: torch.Tensor, cache: list[Any], first: bool) -> torch.Tensor:
        """One chunk of one tile through the run, checking the cache protocol as it goes."""
        counter = [run.first_slot]
        y = run_chain(run.stages, chain, h[(..., *chain.windows[0].slices())], self.sizes, cache, counter, first)
        if counter[0] - run.first_slot != run.slots:
            raise RuntimeError(
                f"{run.stages[0].name}...: the tiled stages used {counter[0] - run.first_slot} time-cache entries, "
                f"the layout says {run.slots}: this VAE variant is not supported tiled; set mode to 'untiled'"
            )
        return y

    def _tick(self) -> None:
        self.done += 1
        if self.ctx.progress is not None:
            self.ctx.progress(self.done, max(self.total, self.done))
        if self.ctx.check_interrupt is not None:
            self.ctx.check_interrupt()


class _Spent(list):
    """A tile's time cache during its last chunk: entries are read as usual, but what the stages
    store for a next chunk that never comes is dropped at once instead of held until the tile ends
    (for a still image, the whole cache). Within one chunk a stage reads its entry before it
    replaces it, so nothing it stores would have been read."""

    def __setitem__(self, index: Any, value: Any) -> None:
        super().__setitem__(index, None if isinstance(value, torch.Tensor) else value)


def _output_device(decision: Decision, needs: Needs, device: torch.device) -> tuple[torch.device, bool]:
    """Where the output lives: the compute device when the store budget holds it, else (pinned) CPU memory."""
    if decision.store_budget >= needs.store or device.type == "cpu":
        return device, False
    return torch.device("cpu"), device.type == "cuda"
