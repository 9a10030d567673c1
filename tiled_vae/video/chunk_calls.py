"""Exact spatial tiling of causal video encoder/decoder calls made chunk by chunk by someone else.

When the pack does not own the time loop (a hook on ``decoder.forward`` while another node's code
calls it once per chunk with ``feat_cache`` / ``feat_idx`` / ``first_chunk``), each call is tiled on
its own: the program's runs go in order (:meth:`~.program.CausalProgram.runs`); the middle
attention sees the whole frame, and in a tiled run each tile runs its stages (:mod:`.windows`) with
windows of the caller's full-frame cache entries and writes the core of every new entry back into a
full-frame entry. So the caller's ``feat_cache``
ends each call holding what the untiled call would have left there, a decode starts fresh whenever
the caller starts with an all-None list, and tiled and untiled calls may even alternate. No
full-resolution activation is held between stages: the device holds one tile's working set, the
latent-size activations around the attention, the caller's cache and the chunk's output.

The pack's own nodes do not come here for the VAEs it knows: they own the loop (:mod:`.tile_major`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..families import Family
from ..families.wan_common import forward_params
from ..geometry import Rect, level_sizes, rect_at_level
from ..planner import plan_for
from ..policy import Context, Decision, RunReport, decide, execute, log_untiled, program_or_reason, summary
from ..validation import check_input, checks_for, full_size
from .budget import clip_needs
from .program import CausalProgram, ClipShape, StageRun
from .windows import Chain, chain_for, halo, predicted_extent, recomputed_share, run_chain

log = logging.getLogger("comfyui-quadtree-tile.tiled_vae")

_ARGS = ("feat_cache", "feat_idx", "first_chunk")


class ChunkCalls:
    """Runs hooked chunk calls of a causal 3D encoder/decoder for a :class:`~..tiler.TiledForward`.

    Keeps only per-decode bookkeeping (calls and tiles done, for progress; a tile size reduced after
    running out of memory; whether the run's line was logged), reset whenever a call starts a new
    decode (an all-None cache list).
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.done = 0
        self.calls = 0
        self.tile_limit: int | None = None
        self._programs: dict[int, tuple[torch.nn.Module, CausalProgram]] = {}

    def __call__(self, original: Callable[..., Any], family: Family, args: tuple, kwargs: dict) -> Any:
        ctx = self.ctx
        module = original.__self__
        call = _bind(module, args, kwargs)
        if call is not None and (call[1] is None or all(v is None for v in call[1])):
            self.done = self.calls = 0
            self.tile_limit = None
        self.calls += 1
        if self.calls == 1:
            ctx.report = RunReport(family=family.name)
        program, reason = program_or_reason(
            ctx.config, call is not None, family.name, lambda: self._program(family, module)
        )
        if program is None or call is None:
            out = ctx.run_untiled(original, reason, args, kwargs)
            if self.calls == 1:
                log_untiled(f"{family.role} call", ctx.report)
            return out
        x, cache, idx, first_chunk = call
        check_input(x, program, family, **checks_for(family))
        out = self._run(program, original, x, cache, idx, first_chunk, args, kwargs)
        if self.calls == 1:
            log.info(summary(f"{family.role} call, per chunk", ctx.report))
        return out

    def _program(self, family: Family, module: torch.nn.Module) -> CausalProgram:
        """The module's program, built once per module for the handler's lifetime."""
        key = id(module)
        if key not in self._programs:
            self._programs[key] = (module, family.build(module))
        return self._programs[key][1]

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
        ctx, report = self.ctx, self.ctx.report
        full = full_size(program, x)
        cache_bytes = sum(v.numel() * v.element_size() for v in cache or () if isinstance(v, torch.Tensor))
        estimate = ctx.untiled_memory(x) if ctx.untiled_memory is not None else None
        shape = ClipShape([(0, x.shape[2])], full, x.shape[2] * program.time_factor)
        needs = clip_needs(program.runs(), x.shape[0], shape, x.dtype, estimate)
        needs = replace(needs, store=needs.store + cache_bytes)  # the caller's new cache, made tile by tile
        free = ctx.free_memory(x.device)
        decision = decide(ctx.config, full, program.align, needs, free)
        if self.tile_limit and not decision.untiled:
            decision = Decision(False, min(decision.tile, self.tile_limit), decision.store_budget, decision.reason)
        report.free, report.needs, report.reason = free, needs, decision.reason
        saved = (list(cache) if cache is not None else None), idx[0]

        def restoring(run: Callable[[], Any]) -> Any:
            """Run, putting the caller's cache list back as it was if the run fails (for a retry)."""
            try:
                return run()
            except BaseException:
                if cache is not None:
                    cache[:] = saved[0]
                idx[0] = saved[1]
                raise

        def untiled() -> Any:
            report.tiled = False
            return restoring(lambda: original(*args, **kwargs))

        def tiled(tile: int) -> torch.Tensor:
            store = x.device if decision.store_budget >= needs.store else torch.device("cpu")
            run = _Call(self, program, x, full, store, tile)
            with torch.no_grad():  # never keep an autograd graph across tiles
                out = restoring(lambda: run(cache, idx, first_chunk))
            self.tile_limit = tile
            return out

        return execute(decision, untiled, tiled, full, program.align, x.device, report)

    def tick(self, total_in_call: int, done_in_call: int, calls_hint: int | None) -> None:
        """One tile done: progress over the whole decode (estimated from this call's tiles), interrupt."""
        self.done += 1
        progress = self.ctx.progress
        if progress is not None:
            remaining_calls = max(0, (calls_hint or self.calls) - self.calls)
            total = self.done - done_in_call + total_in_call + remaining_calls * total_in_call
            progress(self.done, max(total, self.done))
        if self.ctx.check_interrupt is not None:
            self.ctx.check_interrupt()


@dataclass(frozen=True)
class _Slot:
    """Where one time-cache entry of a tiled run lives for one tile: the owning stage's input window
    and output extent, the frame sizes at those levels, and the tile's cores there (what the tile
    writes back)."""

    window: Rect
    extent: Rect
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    core_in: Rect
    core_out: Rect


class _Call:
    """One hooked chunk call: the program's runs in order, the tiled ones tile by tile."""

    def __init__(
        self,
        owner: ChunkCalls,
        program: CausalProgram,
        x: torch.Tensor,
        full: tuple[int, int],
        store: torch.device,
        tile: int,
    ) -> None:
        self.owner, self.program, self.x, self.full, self.store = owner, program, x, full, store
        self.device = x.device
        self.sizes = level_sizes(full[0], full[1], program.levels)
        self.runs = program.runs()
        config, align = owner.ctx.config, program.align
        cell = align if program.in_level == 0 else 1
        self.plan = plan_for(config.planner, config.min_tile_size, x[:, :, -1], full, tile, align, cell)
        report = owner.ctx.report
        report.tiled, report.tile_size, report.plan, report.store = True, tile, self.plan, str(store)
        report.halo = max(halo(r.stages) << r.stages[0].level for r in self.runs if r.tiled)
        self.total = len(self.plan) * sum(1 for r in self.runs if r.tiled)
        self.done = 0

    def __call__(self, cache: list[Any] | None, idx: list[int], first_chunk: bool) -> torch.Tensor:
        """Run every stage on this chunk; the caller's cache list ends as the untiled call leaves it."""
        h = self.x
        shares = []
        for k, run in enumerate(self.runs):
            if not run.tiled:
                counter = [idx[0] + run.first_slot]
                for stage in run.stages:
                    h = stage.fn(h.to(self.device), cache, counter, first_chunk)
                continue
            last = k == len(self.runs) - 1
            h, share = self._tiles(
                run, h, cache, idx[0] + run.first_slot, first_chunk, self.store if last else self.device
            )
            shares.append(share)
        idx[0] += self.program.slots_before(len(self.program.stages))
        self.owner.ctx.report.halo_overhead = max(shares, default=0.0)
        # A decoder's output stays on the store: the caller concatenates frames there, so device memory
        # does not grow with the clip. An encoder's output goes where the caller expects it.
        return h if self.program.out_level == 0 else h.to(self.device)

    def _slots(self, run: StageRun, rect: Rect, chain: Chain, start: int) -> dict[int, _Slot]:
        """The run's cache entries for one tile, by index."""
        slots, i = {}, start
        for stage, window in zip(run.stages, chain.windows, strict=True):
            core_in = rect_at_level(rect, stage.level, self.full, self.sizes)
            core_out = rect_at_level(rect, stage.out_level, self.full, self.sizes)
            extent = predicted_extent(stage, window)
            in_size, out_size = self.sizes[stage.level], self.sizes[stage.out_level]
            for j in range(i, i + stage.slots):
                slots[j] = _Slot(window, extent, in_size, out_size, core_in, core_out)
            i += stage.slots
        return slots

    def _tiles(
        self,
        run: StageRun,
        h: torch.Tensor,
        cache: list[Any] | None,
        start: int,
        first_chunk: bool,
        where: torch.device,
    ) -> tuple[torch.Tensor, float]:
        """One tiled run over the chunk: windows of the caller's cache in, cores of the new entries
        back (the list is updated when every tile is done), each tile's core into the output."""
        level = run.stages[-1].out_level
        chains = [chain_for(run.stages, rect_at_level(r, level, self.full, self.sizes), self.sizes) for r in self.plan]
        new: dict[int, Any] = {}
        out: torch.Tensor | None = None
        hint = _calls_hint(self.x, self.program)
        for rect, chain in zip(self.plan, chains, strict=True):
            slots = self._slots(run, rect, chain, start)
            local = None
            if cache is not None:
                local = [None] * len(cache)
                for i, slot in slots.items():
                    local[i] = _cut(cache[i], slot, self.device)
            counter = [start]
            t = h[(..., *chain.windows[0].slices())].to(self.device)
            y = run_chain(run.stages, chain, t, self.sizes, local, counter, first_chunk)
            del t
            if cache is not None and counter[0] - start != run.slots:
                raise RuntimeError(
                    f"{run.stages[0].name}...: the tiled stages used {counter[0] - start} time-cache entries, the "
                    f"layout says {run.slots}: this VAE variant is not supported tiled; set mode to 'untiled'"
                )
            if out is None:
                out = torch.empty((*y.shape[:-2], *self.sizes[level]), dtype=y.dtype, device=where)
            out[(..., *chain.core.slices())] = y.to(where)
            del y
            if local is not None:
                for i, slot in slots.items():
                    _write_back(new, i, local[i], slot, self.store)
            self.done += 1
            self.owner.tick(self.total, self.done, hint)
        if out is None:
            raise RuntimeError("the tile plan has no tile")
        if cache is not None:
            for i, value in new.items():
                cache[i] = value
        return out, recomputed_share(run.stages, chains, self.sizes)


def _cut(entry: Any, slot: _Slot, device: torch.device) -> Any:
    """The tile's window of a full-frame cache entry (None and the 'Rep' marker pass as they are)."""
    if not isinstance(entry, torch.Tensor):
        return entry
    hw = tuple(entry.shape[-2:])
    if hw == slot.in_size:
        return entry[(..., *slot.window.slices())].to(device)
    if hw == slot.out_size:
        return entry[(..., *slot.extent.slices())].to(device)
    raise RuntimeError(
        f"a time-cache entry has spatial size {hw} but this call's frame is {slot.in_size[0]}x{slot.in_size[1]} there: "
        "the cache belongs to a different decode; start a new decode with a fresh cache list"
    )


def _write_back(new: dict[int, Any], i: int, value: Any, slot: _Slot, store: torch.device) -> None:
    """Put the core of a tile's new cache entry into the full-frame entry ``new[i]``."""
    if not isinstance(value, torch.Tensor):
        new[i] = value  # None or the 'Rep' marker: the same in every tile
        return
    hw = (value.shape[-2], value.shape[-1])
    if hw == (slot.window.height, slot.window.width):
        outer, core, size = slot.window, slot.core_in, slot.in_size
    elif hw == (slot.extent.height, slot.extent.width):
        outer, core, size = slot.extent, slot.core_out, slot.out_size
    else:
        raise RuntimeError(
            f"time-cache entry {i} has spatial size {hw}, neither the window's input {slot.window.height}x"
            f"{slot.window.width} nor its output {slot.extent.height}x{slot.extent.width}: this VAE variant is not "
            "supported tiled; set mode to 'untiled'"
        )
    full = new.get(i)
    if full is None:
        full = new[i] = torch.empty((*value.shape[:-2], *size), dtype=value.dtype, device=store)
    full[(..., *core.slices())] = value[(..., *core.relative_to(outer).slices())].to(store)


def _bind(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, Any, list[int], bool] | None:
    """(x, feat_cache, feat_idx, first_chunk) from a call, or None when it passes anything else."""
    names = ("x", *forward_params(module))
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


def _calls_hint(x: torch.Tensor, program: CausalProgram) -> int | None:
    """How many calls this decode will make, when ``x`` is a frame slice of the caller's whole clip."""
    base = getattr(x, "_base", None)
    if not isinstance(base, torch.Tensor) or base.ndim != 5 or base.shape[-2:] != x.shape[-2:]:
        return None
    if base.shape[:2] != x.shape[:2]:
        return None
    t = base.shape[2]
    return t if program.in_level > 0 else 1 + (t - 1) // 4
