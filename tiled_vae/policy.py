"""One run policy for the 2D and video paths: untiled or tiled, the tile side, where the full-size
state lives, what happens when the device runs out of memory, and the one log line that says so.

Each path estimates what it needs (:class:`Needs`); :func:`decide` turns that, the user's
:class:`TilingConfig` and the free device memory into a :class:`Decision`; :func:`execute` runs it,
halving the tile after every out-of-memory error; :func:`summary` is the line the run logs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import torch

from .families.common import Unsupported
from .geometry import Rect

log = logging.getLogger("comfyui-quadtree-tile.tiled_vae")

Planner = Literal["quadtree", "grid"]
Mode = Literal["auto", "tiled", "untiled"]
Store = Literal["auto", "device", "cpu"]

DEFAULT_CPU_TILE = 1024
"""Tile side (full-resolution px) when no device memory figure is available (CPU runs)."""

WORKSPACE_FACTOR = 1.5
"""Allowance for convolution workspaces and allocator slack on top of the tensors a path counts."""

USABLE_SHARE = 0.8
"""Share of the free device memory a tiled run plans to use (the rest absorbs estimate errors)."""

MIN_STORE_TILE = 256
"""Tile side (full-resolution px) the automatic store choice keeps room for beside the store: the
store stays on the device as long as a tile this large still fits beside it (a smaller tile only
costs more tiles; a store on the CPU costs every byte over PCIe)."""

GIB = 2**30


@dataclass
class TilingConfig:
    """What the user chose.

    ``tile_size``: largest tile side in full-resolution pixels (output pixels for a decoder,
    input pixels for an encoder); 0 picks it from free device memory. ``min_tile_size``: smallest
    quadtree leaf (0: a quarter of the tile). ``mode``: ``auto`` runs untiled when the untiled
    call's memory estimate fits in free device memory (on a CPU: when the image fits in one
    tile) and tiled otherwise, ``tiled`` always tiles, ``untiled`` calls the original.
    ``activation_store``: where full-size state that outlives a tile waits (``device``, ``cpu``,
    or ``auto``: the device while it fits).
    """

    tile_size: int = 0
    planner: Planner = "grid"
    min_tile_size: int = 0
    mode: Mode = "auto"
    activation_store: Store = "auto"


@dataclass(frozen=True)
class Needs:
    """Device bytes a call needs, as its path estimates them.

    ``untiled``: the untiled call's peak (the host's own estimate when it gave one).
    ``per_pixel``: a tiled run's working set per full-resolution pixel of the largest tile.
    ``fixed``: what a tiled run holds on the device whatever the tile (attention keys and values,
    a latent-size intermediate). ``store``: the full-size state a tiled run keeps between tiles
    (registers, the output) if all of it stayed on the device. ``source`` names where ``untiled``
    came from, for the log line.
    """

    untiled: float
    per_pixel: float
    fixed: float = 0.0
    store: float = 0.0
    source: str = "counted"


@dataclass(frozen=True)
class Decision:
    """What to run: untiled, or tiled with ``tile`` px tiles and ``store_budget`` device bytes for
    the full-size state (``math.inf``: all of it on the device; 0: all of it on the CPU)."""

    untiled: bool
    tile: int
    store_budget: float
    reason: str


@dataclass
class RunReport:
    """What the last hooked call did, for the log line, previews and tests."""

    family: str | None = None
    tiled: bool = False
    reason: str = ""
    tile_size: int = 0
    plan: list[Rect] = field(default_factory=list)
    store: str = ""
    retries: int = 0
    halo: int = 0
    halo_overhead: float = 0.0
    free: int | None = None
    needs: Needs | None = None


Progress = Callable[[int, int], None]
"""``progress(done, total)`` after every tile."""


class Context(Protocol):
    """What a path reads from the hook handler (:class:`~.tiler.TiledForward`): the user's choices,
    the host's callbacks and the report it fills."""

    config: TilingConfig
    progress: Progress | None
    check_interrupt: Callable[[], None] | None
    free_memory: Callable[[torch.device], int | None]
    untiled_memory: Callable[[torch.Tensor], float | None] | None
    report: RunReport

    def run_untiled(self, original: Callable[..., Any], reason: str, args: tuple, kwargs: dict) -> Any: ...


def default_free_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device (driver view plus what torch holds unused); None elsewhere."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def aligned_tile(tile: int, align: int) -> int:
    """``tile`` rounded down to a multiple of ``align``, never below it."""
    return max(align, tile // align * align)


def tile_from_memory(budget: float, per_pixel: float, align: int) -> int:
    """Largest aligned square tile whose working set fits in ``budget`` bytes."""
    side = int(math.sqrt(max(0.0, budget) / per_pixel)) if per_pixel > 0 else 1 << 20
    return aligned_tile(side, align)


def configured_tile(config: TilingConfig, align: int) -> int:
    """The user's tile side, aligned; warns when it is below the VAE's alignment."""
    if config.tile_size < align:
        log.warning("tile size %d px is below this VAE's %d px alignment; using %d px", config.tile_size, align, align)
    return aligned_tile(config.tile_size, align)


def decide(config: TilingConfig, full: tuple[int, int], align: int, needs: Needs, free: int | None) -> Decision:
    """Untiled or tiled, the tile side and the device budget of the store, for one call.

    ``full`` is the full-resolution size, ``free`` the free device memory (None on a CPU).
    ``auto`` runs untiled when ``needs.untiled`` fits in ``free``; a CPU run (no figure) runs
    untiled when the image fits in one tile. A tiled run keeps the store on the device when it
    fits beside a :data:`MIN_STORE_TILE` tile (``activation_store="auto"``), gives the tile what is
    left of :data:`USABLE_SHARE` of ``free``, and never plans a tile larger than the image.
    """
    if config.mode == "untiled":
        return Decision(True, 0, math.inf, "mode is 'untiled'")
    biggest = aligned_tile(-(-max(full) // align) * align, align)
    if free is None:
        tile = min(configured_tile(config, align) if config.tile_size else DEFAULT_CPU_TILE, biggest)
        if config.mode == "auto" and tile >= max(full):
            return Decision(True, tile, math.inf, f"the image ({full[1]}x{full[0]} px) fits in one {tile} px tile")
        budget = 0.0 if config.activation_store == "cpu" else math.inf
        return Decision(False, tile, budget, "mode is 'tiled'" if config.mode == "tiled" else "larger than one tile")
    if config.mode == "auto" and needs.untiled <= free:
        return Decision(True, 0, math.inf, f"untiled needs {needs.untiled / GIB:.2f} GiB of {free / GIB:.2f} GiB free")
    usable = free * USABLE_SHARE - needs.fixed
    floor = needs.per_pixel * min(MIN_STORE_TILE, biggest) ** 2
    if config.activation_store == "device":
        budget = math.inf
    elif config.activation_store == "cpu":
        budget = 0.0
    else:
        budget = math.inf if needs.store + floor <= usable else max(0.0, usable - floor)
    tile = (
        configured_tile(config, align)
        if config.tile_size
        else tile_from_memory(usable - min(budget, needs.store), needs.per_pixel, align)
    )
    why = "mode is 'tiled'" if config.mode == "tiled" else f"untiled needs {needs.untiled / GIB:.2f} GiB"
    return Decision(False, min(tile, biggest), budget, f"{why}, {free / GIB:.2f} GiB free")


P = TypeVar("P")


def program_or_reason(
    config: TilingConfig, bound: bool, family_name: str, build: Callable[[], P]
) -> tuple[P | None, str]:
    """The program a tiled run of a call needs, or (None, why the call runs untiled instead): the
    user asked for untiled, the call passes arguments the tiled path cannot honour (``bound`` is
    False), or the module is a variant of ``family_name`` it cannot tile (``build`` raised)."""
    if config.mode == "untiled":
        return None, "mode is 'untiled'"
    if not bound:
        return None, "the call passes arguments the tiled path does not take"
    try:
        return build(), ""
    except Unsupported as e:
        return None, f"{family_name} cannot be tiled: {e}"


def log_untiled(what: str, report: RunReport) -> None:
    """The line of a call that ran untiled: a warning when the module could not be tiled, else info."""
    (log.warning if "cannot be tiled" in report.reason else log.info)(summary(what, report))


def oom_errors() -> tuple[type[BaseException], ...]:
    """The exception types torch raises when the compute device runs out of memory."""
    return tuple(e for e in (getattr(torch, "OutOfMemoryError", None), torch.cuda.OutOfMemoryError) if e)


def release_cached(device: torch.device) -> None:
    """Return the allocator's cached blocks after an out-of-memory error, before a retry."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def halved(tile: int, align: int) -> int:
    """Half the tile side, aligned down, never below ``align``: the next size after running out of memory."""
    return aligned_tile(tile // 2, align)


T = TypeVar("T")


def execute(
    decision: Decision,
    untiled: Callable[[], T],
    tiled: Callable[[int], T],
    full: tuple[int, int],
    align: int,
    device: torch.device,
    report: RunReport,
) -> T:
    """Run ``decision``: the untiled call, or ``tiled(tile)``; after an out-of-memory error, tiled
    with half the tile (an untiled run falls back to half the image), until the tile reaches the
    alignment. ``untiled`` must leave its inputs as it found them when it raises. Retries are
    counted in ``report`` and logged as warnings.
    """
    oom = oom_errors()
    if decision.untiled:
        try:
            return untiled()
        except oom:
            pass  # leave the except block first so the failed attempt's tensors can be freed
        release_cached(device)
        tile = halved(max(full), align)
        report.retries += 1
        log.warning("out of device memory untiled; tiling with tiles of %d px", tile)
    else:
        tile = decision.tile
    while True:
        try:
            return tiled(tile)
        except oom:
            if tile // 2 < align:
                raise
        release_cached(device)
        tile = halved(tile, align)
        report.retries += 1
        log.warning("out of device memory while tiling; retrying with tiles of %d px", tile)


def summary(what: str, report: RunReport) -> str:
    """The one line a run logs: what ran, why, the tile, the halo, the store and the memory figures."""
    head = f"{what} ({report.family or 'unrecognised module'})"
    if not report.tiled:
        text = f"{head}: untiled, {report.reason}"
    else:
        tiles = len(report.plan)
        halo = f"halo {report.halo} px (+{100 * report.halo_overhead:.0f}% recomputed)" if tiles > 1 else "no halo"
        text = (
            f"{head}: tiled, {tiles} tile{'s' if tiles != 1 else ''} of up to {report.tile_size} px, {halo}, "
            f"store on {report.store}; {report.reason}"
        )
    if report.needs is not None and report.free is not None:
        n = report.needs
        figures = f"free {report.free / GIB:.2f} GiB; untiled {n.untiled / GIB:.2f} GiB ({n.source})"
        if report.tiled:
            figures += (
                f"; tile {n.per_pixel * report.tile_size**2 / GIB:.2f} GiB + {n.fixed / GIB:.2f} fixed; "
                f"store {n.store / GIB:.2f} GiB"
            )
        text += f" [{figures}]"
    if report.retries:
        text += f"; {report.retries} out-of-memory retr{'ies' if report.retries > 1 else 'y'}"
    return text
