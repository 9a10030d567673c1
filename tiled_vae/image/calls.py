"""The 2D path: one hooked call of an SD/SDXL/SD3/Flux encoder or decoder, untiled or through the engine."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch

from ..families import Family
from ..planner import plan_for
from ..policy import GIB, Context, Decision, decide, execute, log_untiled, program_or_reason, summary
from ..validation import check_input, checks_for, full_size
from .budget import image_needs
from .engine import Engine, RunOptions, placement_for
from .placement import Placement, band_plan
from .program import Program
from .transfers import backend_for

log = logging.getLogger("comfyui-quadtree-tile.tiled_vae")


def run_image_call(ctx: Context, original: Callable[..., Any], family: Family, args: tuple, kwargs: dict) -> Any:
    """Run one call of a 2D module: checks first, then the policy's decision, with the report filled
    and one log line."""
    report = ctx.report
    bound = len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor)
    program, reason = program_or_reason(ctx.config, bound, family.name, lambda: family.build(original.__self__))
    if program is None:
        out = ctx.run_untiled(original, reason, args, kwargs)
        log_untiled(_verb(family), report)
        return out
    x = args[0]
    check_input(x, program, family, **checks_for(family))
    full = full_size(program, x)
    estimate = ctx.untiled_memory(x) if ctx.untiled_memory is not None else None
    needs = image_needs(program, x, full, estimate)
    free = ctx.free_memory(x.device)
    decision = decide(ctx.config, full, program.align, needs, free)
    report.free, report.needs, report.reason = free, needs, decision.reason

    def untiled() -> Any:
        report.tiled = False
        return original(x)

    def tiled(tile: int) -> torch.Tensor:
        return _run_engine(ctx, program, x, full, tile, decision)

    out = execute(decision, untiled, tiled, full, program.align, x.device, report)
    log.info(summary(_verb(family), report))
    return out


def _verb(family: Family) -> str:
    return "decode" if family.role == "decoder" else "encode"


def _run_engine(
    ctx: Context, program: Program, x: torch.Tensor, full: tuple[int, int], tile: int, decision: Decision
) -> torch.Tensor:
    """Run the engine on ``tile`` px tiles (the report says so): the configured plan when every
    full-size activation stays on the device, else full-width bands of the tile's area."""
    report = ctx.report
    backend = backend_for(x.device)
    budget = decision.store_budget if backend is not None else math.inf
    placement = placement_for(program, x.shape[0], full, x.dtype, budget)
    if placement.spills():
        plan = band_plan(full, tile, program.align)
    else:
        cell = program.align if program.in_level == 0 else 1
        plan = plan_for(ctx.config.planner, ctx.config.min_tile_size, x, full, tile, program.align, cell)
    report.tiled, report.tile_size, report.plan = True, tile, plan
    report.store = describe_store(placement, x.device)
    options = RunOptions(x.device, budget, ctx.progress, ctx.check_interrupt, backend)
    engine = Engine(program, plan, full, options, x.dtype)
    with torch.no_grad():  # never keep an autograd graph across tiles
        out = engine.run(x)
    report.halo, report.halo_overhead = engine.halo(), engine.halo_overhead()
    return out


def describe_store(placement: Placement, device: torch.device) -> str:
    """Where the run keeps its full-size activations, for the log line: ``cuda:0 (1.50 GiB)`` or
    ``cuda:0 0.80 GiB + pinned CPU 4.00 GiB (full-width bands)``."""
    on_device = f"{device} {placement.device_bytes() / GIB:.2f} GiB"
    if not placement.spills():
        return f"{device} ({placement.device_bytes() / GIB:.2f} GiB)"
    return f"{on_device} + pinned CPU {placement.host_bytes() / GIB:.2f} GiB (full-width bands)"
