"""Exact spatial tiling of causal video (3D) VAEs, one hooked chunk call at a time.

The host (ComfyUI's or diffusers' ``WanVAE``) owns the time loop: it calls the encoder or decoder
once per chunk of frames with ``feat_cache`` / ``feat_idx`` (and ``first_chunk`` on Wan 2.2). For
each call the tiler runs the module's :class:`~.causal_program.CausalProgram`: global stages on
the whole frame, tiled stages window by window. Each window gets a list holding *windows of the
full-frame cache entries* the stage owns, calls the real submodules (whose own cache logic,
``'Rep'`` markers and ``first_chunk`` handling run unchanged), and writes the core of every new
entry back into a full-frame entry. So the caller's ``feat_cache`` ends each call holding exactly
what the untiled call would have left there (full-frame tensors, on the store device when the
compute device is short): the time state needs no bookkeeping of its own, a decode starts fresh
whenever the host starts with an all-None list, and tiled and untiled calls may even alternate.

Every tile recomputes only its stage's reach (2 px for a residual block), the result equals the
untiled one up to float rounding, and device memory is bounded by the tile: full-frame
activations, cache entries and (for decoders) the output live on the store device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from ..families import Family, Unsupported
from ..geometry import Rect, level_sizes, output_extent, rect_at_level
from ..planner import plan_for
from ..policy import (
    DEFAULT_CPU_TILE,
    USABLE_SHARE,
    WORKSPACE_FACTOR,
    RunReport,
    configured_tile,
    halved,
    oom_errors,
    release_cached,
    summary,
    tile_from_memory,
)
from ..validation import check_input, checks_for, full_size
from .program import CACHE_T, CausalProgram, CausalStage

log = logging.getLogger("comfyui-quadtree-tile.tiled_vae")

_ARGS = ("feat_cache", "feat_idx", "first_chunk")


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


def _expected_extent(stage: CausalStage, window: Rect) -> Rect:
    """The output extent of ``window`` before running it (used to cut windows of output-level cache entries)."""
    if stage.geometry == "same":
        return window
    if stage.geometry == "up":
        return Rect(2 * window.y0, 2 * window.y1, 2 * window.x0, 2 * window.x1)
    return Rect(window.y0 // 2, window.y1 // 2, window.x0 // 2, window.x1 // 2)


class ChunkCalls:
    """Runs hooked calls of a causal 3D encoder/decoder for a :class:`~.tiler.TiledForward` handler.

    Uses the handler's ``config``, ``report``, ``progress``, ``check_interrupt``, ``free_memory``
    and ``plan``; keeps only per-decode bookkeeping (progress counts, a tile size reduced after
    running out of memory), reset whenever a call starts a new decode.
    """

    def __init__(self, handler: Any) -> None:
        self.h = handler
        self.done = 0
        self.calls = 0
        self.tile_limit: int | None = None
        self._programs: dict[tuple[int, str], tuple[torch.nn.Module, CausalProgram]] = {}

    # --- entry point -----------------------------------------------------------------------
    def __call__(self, original: Callable[..., Any], family: Family, args: tuple, kwargs: dict) -> Any:
        h = self.h
        h.report = RunReport(family=family.name)
        if h.config.mode == "untiled":
            return h.run_untiled(original, "mode is 'untiled'", args, kwargs)
        try:
            program = self._program(family, original.__self__)
        except Unsupported as e:
            out = h.run_untiled(original, f"{family.name} cannot be tiled: {e}", args, kwargs)
            log.warning(summary(family.role, h.report))
            return out
        call = _bind(program, args, kwargs)
        if call is None:
            reason = f"{family.name}: the call passes arguments the tiled path does not take"
            return h.run_untiled(original, reason, args, kwargs)
        x, cache, idx, first_chunk = call
        check_input(x, program, family, **checks_for(family))
        if cache is None or all(v is None for v in cache):
            self.done = self.calls = 0
            self.tile_limit = None
        self.calls += 1
        return self._run(program, original, x, cache, idx, first_chunk, args, kwargs)

    def _program(self, family: Family, module: torch.nn.Module) -> CausalProgram:
        """The module's program, built once per module and family for the handler's lifetime."""
        key = (id(module), family.name)
        if key not in self._programs:
            self._programs[key] = (module, family.build(module))
        return self._programs[key][1]

    # --- one call ----------------------------------------------------------------------------
    def _run(
        self,
        program: CausalProgram,
        original: Callable[..., Any],
        x: torch.Tensor,
        cache: list[Any] | None,
        idx: list[int],
        first_chunk: bool,
        args: tuple,
        kwargs: dict,
    ) -> torch.Tensor:
        h = self.h
        full = full_size(program, x)
        tile = self._tile_size(program, x)
        if h.config.mode == "auto" and tile >= max(full):
            h.report.tile_size = tile
            saved, start = (list(cache) if cache is not None else None), idx[0]
            try:
                return h.run_untiled(original, f"the frame ({full[1]}x{full[0]} px) fits in one tile", args, kwargs)
            except oom_errors():
                pass  # leave the except block first so the failed attempt's tensors can be freed
            if cache is not None:
                cache[:] = saved
            idx[0] = start
            release_cached(x.device)
            tile = self.tile_limit = halved(max(full), program.align)
            log.warning("out of device memory untiled; tiling with tiles of %d px", tile)
        store = self._store_device(program, x, full, tile)
        report = h.report
        report.tiled, report.store, report.tile_size = True, str(store), tile
        sizes = level_sizes(full[0], full[1], program.levels)
        run = _Run(self, program, x, full, sizes, store, tile)
        if self.calls == 1:
            log.info(
                "tiled %s: %dx%d px per frame, tiles of up to %d px (%s planner), activations on %s",
                report.family,
                full[1],
                full[0],
                tile,
                h.config.planner,
                store,
            )
        with torch.no_grad():  # never keep an autograd graph across tiles
            out = run.all_stages(cache, idx, first_chunk)
        report.tile_size, report.plan = run.tile, run.plan_for(run.tile)
        report.retries, report.halo_overhead = run.retries, run.halo_overhead()
        if run.tile < tile:
            self.tile_limit = run.tile
        # A decoder's output goes to the store device: the host concatenates frames there, so device
        # memory does not grow with the clip. An encoder's output stays where the host expects it.
        return out if program.out_level == 0 and program.in_level > 0 else out.to(x.device)

    def _tile_size(self, program: CausalProgram, x: torch.Tensor) -> int:
        align = program.align
        if self.h.config.tile_size:
            tile = configured_tile(self.h.config, align)
        else:
            free = self.h.free_memory(x.device)
            per_pixel = call_bytes_per_pixel(program, x)
            tile = DEFAULT_CPU_TILE if free is None else tile_from_memory(free * USABLE_SHARE / 2, per_pixel, align)
        return min(tile, self.tile_limit) if self.tile_limit else tile

    def _store_device(self, program: CausalProgram, x: torch.Tensor, full: tuple[int, int], tile: int) -> torch.device:
        choice = self.h.config.activation_store
        if x.device.type == "cpu" or choice == "device":
            return x.device
        if choice == "cpu":
            return torch.device("cpu")
        free = self.h.free_memory(x.device)
        need = _store_bytes(program, x, full)
        return x.device if free is not None and need <= free // 2 else torch.device("cpu")

    def tick(self, done_in_call: int, total_in_call: int, calls_hint: int | None) -> None:
        self.done += 1
        progress = self.h.progress
        if progress is not None:
            remaining_calls = max(0, (calls_hint or self.calls) - self.calls)
            total = self.done - done_in_call + total_in_call + remaining_calls * total_in_call
            progress(self.done, max(total, self.done))
        if self.h.check_interrupt is not None:
            self.h.check_interrupt()


class _Run:
    """The stages of one hooked call over one frame chunk."""

    def __init__(
        self,
        owner: ChunkCalls,
        program: CausalProgram,
        x: torch.Tensor,
        full: tuple[int, int],
        sizes: list[tuple[int, int]],
        store: torch.device,
        tile: int,
    ) -> None:
        self.owner = owner
        self.program = program
        self.x = x
        self.device = x.device
        self.full = full
        self.sizes = sizes
        self.store = store
        self.tile = tile
        self.retries = 0
        self.kept: torch.Tensor | None = None
        self._plans: dict[int, list[Rect]] = {}
        self.calls_hint = _calls_hint(x, program)
        self.done_in_call = 0
        self.total_in_call = sum(len(self.cores(s)) for s in program.window_steps())

    def plan_for(self, tile: int) -> list[Rect]:
        if tile not in self._plans:
            frame, config, align = self.x[:, :, -1], self.owner.h.config, self.program.align
            cell = align if self.program.in_level == 0 else 1
            self._plans[tile] = plan_for(config.planner, config.min_tile_size, frame, self.full, tile, align, cell)
        return self._plans[tile]

    def cores(self, stage: CausalStage, tile: int | None = None) -> list[tuple[Rect, Rect]]:
        """(core at the input level, core at the output level) per tile; one tile when the stage's
        finer level fits in one."""
        tile = tile or self.tile
        fine = min(stage.level, stage.out_level)
        hin, win = self.sizes[stage.level]
        hout, wout = self.sizes[stage.out_level]
        hf, wf = self.sizes[fine]
        if max(hf, wf) <= tile >> fine:
            return [(Rect(0, hin, 0, win), Rect(0, hout, 0, wout))]
        pairs = []
        for r in self.plan_for(tile):
            c_in = rect_at_level(r, stage.level, self.full, self.sizes)
            c_out = rect_at_level(r, stage.out_level, self.full, self.sizes)
            if c_out.area > 0:
                pairs.append((c_in, c_out))
        return pairs

    def all_stages(self, cache: list[Any] | None, idx: list[int], first_chunk: bool) -> torch.Tensor:
        counter = [idx[0]]
        h = self.x
        for stage in self.program.stages:
            if stage.keeps_input:
                self.kept = h
            if not stage.tiled:
                h = stage.fn(h.to(self.device), cache, counter, first_chunk)
                if self.owner.h.check_interrupt is not None:
                    self.owner.h.check_interrupt()
            else:
                h = self._tiled_stage(stage, h, cache, counter, first_chunk)
            if stage.shortcut is not None:
                self.kept = None
        idx[0] = counter[0]
        return h

    def _tiled_stage(
        self, stage: CausalStage, h: torch.Tensor, cache: list[Any] | None, counter: list[int], first_chunk: bool
    ) -> torch.Tensor:
        oom = oom_errors()
        while True:
            try:
                out, new = self._tiles(stage, h, cache, counter[0], first_chunk)
                break
            except oom:
                if self.tile // 2 < self.program.align:
                    raise
            release_cached(self.device)
            self.tile = halved(self.tile, self.program.align)
            self.retries += 1
            log.warning("out of device memory in %s; retrying with tiles of %d px", stage.name, self.tile)
        if cache is not None:
            for i, value in new.items():
                cache[i] = value
            counter[0] += stage.slots
        return out

    def _tiles(
        self, stage: CausalStage, h: torch.Tensor, cache: list[Any] | None, start: int, first_chunk: bool
    ) -> tuple[torch.Tensor, dict[int, Any]]:
        in_size = (h.shape[-2], h.shape[-1])
        out_size = self.sizes[stage.out_level]
        slots = range(start, start + stage.slots)
        new: dict[int, Any] = {}
        out: torch.Tensor | None = None
        for core_in, core in self.cores(stage):
            window = stage_window(stage, core, in_size)
            expected = _expected_extent(stage, window)
            local = None
            if cache is not None:
                local = [None] * len(cache)
                for i in slots:
                    local[i] = _cut(cache[i], in_size, window, out_size, expected, self.device)
            t = h[(..., *window.slices())].to(self.device)
            counter = [start]
            y = stage.fn(t, local, counter, first_chunk)
            del t
            if cache is not None and counter[0] != start + stage.slots:
                raise RuntimeError(
                    f"{stage.name} used {counter[0] - start} time-cache entries, the layout says {stage.slots}: "
                    "this VAE variant is not supported tiled; set mode to 'untiled'"
                )
            extent = output_extent(stage.geometry, window, y.shape[-2:])
            if out is None:
                out = torch.empty((*y.shape[:-2], *out_size), dtype=y.dtype, device=self.store)
            y = y[(..., *core.relative_to(extent).slices())]
            if stage.shortcut is not None:
                y = y + self._shortcut(stage, core, first_chunk, cache is not None)
            out[(..., *core.slices())] = y.to(self.store)
            del y
            if local is not None:
                for i in slots:
                    self._write_back(new, i, local[i], window, core_in, extent, core, in_size, out_size)
            self.done_in_call += 1
            self.owner.tick(self.done_in_call, self.total_in_call, self.calls_hint)
        if out is None:
            raise RuntimeError(f"{stage.name}: the tile plan has no tile at this level")
        return out, new

    def _shortcut(self, stage: CausalStage, core: Rect, first_chunk: bool, cached: bool) -> torch.Tensor:
        """A residual group's pixel-shuffle shortcut of the kept group input, at the output ``core``."""
        kept = self.kept
        if kept is None:
            raise RuntimeError(f"{stage.name}: no group input was kept for its shortcut")
        h, w = kept.shape[-2:]
        if stage.geometry == "up":
            src = Rect(core.y0 // 2, -(-core.y1 // 2), core.x0 // 2, -(-core.x1 // 2))
            extent = Rect(2 * src.y0, 2 * src.y1, 2 * src.x0, 2 * src.x1)
        elif stage.geometry == "down":
            src = Rect(2 * core.y0, min(h, 2 * core.y1), 2 * core.x0, min(w, 2 * core.x1))
            extent = Rect(core.y0, core.y0 + src.height // 2, core.x0, core.x0 + src.width // 2)
        else:
            src = extent = core
        y = stage.shortcut(kept[(..., *src.slices())].to(self.device), first_chunk, cached)
        return y[(..., *core.relative_to(extent).slices())]

    def _write_back(
        self,
        new: dict[int, Any],
        i: int,
        value: Any,
        window: Rect,
        core_in: Rect,
        extent: Rect,
        core_out: Rect,
        in_size: tuple[int, int],
        out_size: tuple[int, int],
    ) -> None:
        """Put the core of a window's new cache entry into the full-frame entry ``new[i]``."""
        if not isinstance(value, torch.Tensor):
            new[i] = value  # None or the 'Rep' marker: the same in every window
            return
        hw = (value.shape[-2], value.shape[-1])
        if hw == (window.height, window.width):
            outer, core, size = window, core_in, in_size
        elif hw == (extent.height, extent.width):
            outer, core, size = extent, core_out, out_size
        else:
            raise RuntimeError(
                f"time-cache entry {i} has spatial size {hw}, neither the window's input {window.height}x"
                f"{window.width} nor its output {extent.height}x{extent.width}: this VAE variant is not "
                "supported tiled; set mode to 'untiled'"
            )
        full = new.get(i)
        if full is None:
            full = new[i] = torch.empty((*value.shape[:-2], *size), dtype=value.dtype, device=self.store)
        full[(..., *core.slices())] = value[(..., *core.relative_to(outer).slices())].to(self.store)

    def halo_overhead(self) -> float:
        """Extra input the tiles read (and recompute) over an untiled run, as a fraction (geometry only)."""
        tiled = plain = 0
        for stage in self.program.window_steps():
            in_size = self.sizes[stage.level]
            plain += in_size[0] * in_size[1] * stage.c_in
            windows = (stage_window(stage, c, in_size).area for _, c in self.cores(stage))
            tiled += sum(windows) * stage.c_in
        return tiled / plain - 1 if plain else 0.0


def _cut(
    entry: Any,
    in_size: tuple[int, int],
    window: Rect,
    out_size: tuple[int, int],
    expected: Rect,
    device: torch.device,
) -> Any:
    """The window of a full-frame cache entry a tile's stage call reads (None and 'Rep' pass as they are)."""
    if not isinstance(entry, torch.Tensor):
        return entry
    hw = (entry.shape[-2], entry.shape[-1])
    if hw == in_size:
        return entry[(..., *window.slices())].to(device)
    if hw == out_size:
        return entry[(..., *expected.slices())].to(device)
    raise RuntimeError(
        f"a time-cache entry has spatial size {hw} but this call's frame is {in_size[0]}x{in_size[1]}: "
        "the cache belongs to a different decode; start a new decode with a fresh cache list"
    )


def _bind(program: CausalProgram, args: tuple, kwargs: dict) -> tuple[torch.Tensor, Any, list[int], bool] | None:
    """(x, feat_cache, feat_idx, first_chunk) from a call, or None when it passes anything else."""
    names = ("x", *program.call_args)
    if len(args) > len(names) or not args:
        return None
    bound = dict(zip(names, args, strict=False))
    for k, v in kwargs.items():
        if k not in names or k in bound:
            return None
        bound[k] = v
    if any(k not in _ARGS and k != "x" for k in bound):
        return None
    x, cache, idx = bound["x"], bound.get("feat_cache"), bound.get("feat_idx")
    if not isinstance(x, torch.Tensor) or (cache is not None and not isinstance(cache, list)):
        return None
    if idx is None:
        idx = [0]
    if not (isinstance(idx, list) and len(idx) == 1 and isinstance(idx[0], int)):
        return None
    return x, cache, idx, bool(bound.get("first_chunk", False))


def _frames(program: CausalProgram, x: torch.Tensor) -> int:
    return x.shape[2] * program.time_factor


def call_bytes_per_pixel(program: CausalProgram, x: torch.Tensor) -> float:
    """Device bytes one full-resolution tile pixel costs in the heaviest tiled stage of one call.

    Per stage at level ``k``: the input window (and a float32 normalised copy), the output twice
    (result and cropped copy) over the chunk's frames, plus the stage's cache windows
    (``CACHE_T`` frames per entry), divided by ``4**k``, times the workspace allowance.
    """
    size = torch.finfo(x.dtype).bits // 8
    frames = _frames(program, x)
    worst = 0.0
    for s in program.window_steps():
        level = min(s.level, s.out_level)
        per = (s.c_in * (size + 4) + s.c_out * 3 * size) * frames + s.slots * CACHE_T * max(s.c_in, s.c_out) * size
        worst = max(worst, per / 4**level)
    return worst * x.shape[0] * WORKSPACE_FACTOR


def _store_bytes(program: CausalProgram, x: torch.Tensor, full: tuple[int, int]) -> int:
    """Bytes of the full-frame state of one call: every cache entry plus the largest stage in and out."""
    size = torch.finfo(x.dtype).bits // 8
    frames = _frames(program, x)
    caches = stage = 0
    for s in program.window_steps():
        level = min(s.level, s.out_level)
        px = (full[0] >> level) * (full[1] >> level)
        caches += px * s.slots * CACHE_T * max(s.c_in, s.c_out) * size
        stage = max(stage, px * (s.c_in + s.c_out) * frames * size)
    return (caches + 2 * stage) * x.shape[0]


def _calls_hint(x: torch.Tensor, program: CausalProgram) -> int | None:
    """How many calls this decode will make, when ``x`` is a frame slice of the host's whole clip."""
    base = getattr(x, "_base", None)
    if not isinstance(base, torch.Tensor) or base.ndim != 5 or base.shape[-2:] != x.shape[-2:]:
        return None
    if base.shape[:2] != x.shape[:2]:
        return None
    t = base.shape[2]
    return t if program.in_level > 0 else 1 + (t - 1) // 4
