"""The tiled forward: detect the family, plan tiles, run the engine, fall back to untiled safely."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from .budget import (
    DEFAULT_CPU_TILE,
    bytes_per_pixel,
    halved,
    oom_errors,
    release_cached,
    store_bytes,
    tile_from_memory,
)
from .causal_tiler import CausalTiler
from .engine import Engine, Progress, RunOptions
from .families import Family, Unsupported, detect
from .geometry import Rect
from .hook import ForwardHook
from .planner import detail_map, grid_plan, quadtree_plan
from .program import Program
from .validation import check_input, full_size

log = logging.getLogger("comfyui-quadtree-tile.tiled_vae")

_CHECKS = {
    "layout": "batch, channels, height, width",
    "channel_hint": "4 channels: SD1.x/SDXL; 16: Flux/SD3",
    "pixels": "image is",
}

Planner = Literal["quadtree", "grid"]
Mode = Literal["auto", "tiled", "untiled"]
Store = Literal["auto", "device", "cpu"]


@dataclass
class TilingConfig:
    """What the user chose.

    ``tile_size``: largest tile side in full-resolution pixels (output pixels for a decoder, input
    pixels for an encoder); 0 picks it from free device memory. ``min_tile_size``: smallest
    quadtree leaf (0: a quarter of the tile). ``mode``: ``auto`` tiles only when the image is
    larger than one tile, ``tiled`` always runs the tile engine, ``untiled`` calls the original
    forward. ``store``: where full-size activations live between steps.
    """

    tile_size: int = 0
    planner: Planner = "grid"
    min_tile_size: int = 0
    mode: Mode = "auto"
    store: Store = "auto"


@dataclass
class RunReport:
    """What the last hooked call did, for logs and previews."""

    family: str | None = None
    tiled: bool = False
    reason: str = ""
    tile_size: int = 0
    plan: list[Rect] = field(default_factory=list)
    store: str = ""
    retries: int = 0
    halo_overhead: float = 0.0


def default_free_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device (driver view plus what torch holds unused); None elsewhere."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


class TiledForward:
    """A :class:`~.hook.ForwardHook` handler that runs a VAE encoder or decoder tile by tile.

    It returns what the untiled module returns (up to float rounding). Modules it does not
    recognise, calls with extra arguments it cannot honour, and ``mode="untiled"`` go to the
    original forward with every argument, with one log line saying why.
    """

    def __init__(
        self,
        config: TilingConfig,
        progress: Progress | None = None,
        check_interrupt: Callable[[], None] | None = None,
        free_memory: Callable[[torch.device], int | None] = default_free_memory,
    ) -> None:
        self.config = config
        self.progress = progress
        self.check_interrupt = check_interrupt
        self.free_memory = free_memory
        self.report = RunReport()
        self._causal: CausalTiler | None = None

    def __call__(self, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        module = original.__self__
        self.report = RunReport()
        family = detect(module)
        self.report.family = family.name if family else None
        if family is not None and family.dims == 3:  # causal video VAEs: chunk calls with a time cache
            self._causal = self._causal or CausalTiler(self)
            return self._causal(original, family, args, kwargs)
        reason = self._untiled_reason(family, args, kwargs)
        program = None
        if reason is None:
            try:
                program = family.build(module)
            except Unsupported as e:
                reason = f"{family.name}: {e}"
        if program is None:
            return self.run_untiled(original, reason, args, kwargs)
        x = args[0]
        check_input(x, program, family, **_CHECKS)
        return self._tiled(program, x, original)

    def _untiled_reason(self, family: Family | None, args: tuple, kwargs: dict) -> str | None:
        if self.config.mode == "untiled":
            return "mode is 'untiled'"
        if family is None:
            return "no registered VAE family matches this module's structure"
        if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
            return f"{family.name}: the call passes arguments the tiled path does not take"
        return None

    def run_untiled(self, original: Callable[..., Any], reason: str, args: tuple, kwargs: dict) -> Any:
        """Call the original forward with every argument, recording and logging why it ran untiled."""
        self.report.reason = reason
        log.info("running %s untiled: %s", type(original.__self__).__name__, reason)
        return original(*args, **kwargs)

    def _tiled(self, program: Program, x: torch.Tensor, original: Callable[..., Any]) -> torch.Tensor:
        full = full_size(program, x)
        tile = self.tile_size(program, x)
        if self.config.mode == "auto" and tile >= max(full):
            self.report.tile_size = tile
            try:
                return self.run_untiled(original, f"the image ({full[1]}x{full[0]} px) fits in one tile", (x,), {})
            except oom_errors():
                pass  # leave the except block first so the failed attempt's tensors can be freed
            release_cached(x.device)
            tile = halved(max(full), program.align)
            log.warning("out of device memory untiled; tiling with tiles of %d px", tile)
        return self._run_engine(program, x, full, tile)

    def _run_engine(self, program: Program, x: torch.Tensor, full: tuple[int, int], tile: int) -> torch.Tensor:
        """Run the tile engine, halving the tile after each out-of-memory error."""
        store = self._store_device(program, x, full)
        options = RunOptions(x.device, store, self.progress, self.check_interrupt)
        while True:
            plan = self.plan(program, x, full, tile)
            self.report.tiled, self.report.tile_size, self.report.plan = True, tile, plan
            self.report.store = str(store)
            log.info(
                "tiled %s: %dx%d px, %d tiles of up to %d px (%s planner), activations on %s",
                self.report.family,
                full[1],
                full[0],
                len(plan),
                tile,
                self.config.planner,
                store,
            )
            engine = Engine(program, plan, full, options, x.dtype)
            try:
                with torch.no_grad():  # never keep an autograd graph across tiles
                    out = engine.run(x)
                self.report.halo_overhead = engine.halo_overhead()
                return out
            except oom_errors():
                if tile // 2 < program.align:
                    raise
            del engine
            release_cached(x.device)
            tile = halved(tile, program.align)
            self.report.retries += 1
            log.warning("out of device memory while tiling; retrying with tiles of %d px", tile)

    def tile_size(self, program: Program, x: torch.Tensor) -> int:
        """The configured tile side, aligned; or the largest that fits in free device memory."""
        align = program.align
        if self.config.tile_size:
            if self.config.tile_size < align:
                log.warning(
                    "tile size %d px is below this VAE's %d px alignment; using %d px",
                    self.config.tile_size,
                    align,
                    align,
                )
            return max(align, self.config.tile_size // align * align)
        free = self.free_memory(x.device)
        if free is None:
            return DEFAULT_CPU_TILE
        per_pixel = bytes_per_pixel(program, x.shape[0], x.dtype)
        return tile_from_memory(free, per_pixel, align)

    def _store_device(self, program: Program, x: torch.Tensor, full: tuple[int, int]) -> torch.device:
        choice = self.config.store
        if x.device.type == "cpu" or choice == "device":
            return x.device
        if choice == "cpu":
            return torch.device("cpu")
        free = self.free_memory(x.device)
        need = store_bytes(program, x.shape[0], full, x.dtype)
        return x.device if free is not None and need <= free // 2 else torch.device("cpu")

    def plan(self, program: Program, x: torch.Tensor, full: tuple[int, int], tile: int) -> list[Rect]:
        """Tiles for ``x``; the quadtree measures detail on ``x`` itself (latent or pixels)."""
        align = program.align
        if self.config.planner == "grid":
            return grid_plan(full[0], full[1], tile, align)
        cell = align if program.in_level == 0 else 1
        detail = detail_map(x, cell)
        min_tile = self.config.min_tile_size or None
        return quadtree_plan(full[0], full[1], tile, align, detail, min_tile)


def plan_tiles(
    module: torch.nn.Module,
    x: torch.Tensor,
    config: TilingConfig,
    free_memory: Callable[[torch.device], int | None] = default_free_memory,
) -> tuple[list[Rect], tuple[int, int]]:
    """The tile plan (full-resolution rectangles) and full size a hooked call of ``module`` on ``x`` would use.

    Raises ValueError when no registered family can tile ``module``.
    """
    family = detect(module)
    if family is None:
        raise ValueError(f"{type(module).__name__} matches no VAE family this pack can tile")
    try:
        program = family.build(module)
    except Unsupported as e:
        raise ValueError(f"{family.name} cannot be tiled: {e}") from e
    check_input(x, program, family, **_CHECKS)
    handler = TiledForward(config, free_memory=free_memory)
    full = full_size(program, x)
    return handler.plan(program, x, full, handler.tile_size(program, x)), full


def in_image_pixels(config: TilingConfig, module: torch.nn.Module, image_ratio: int) -> TilingConfig:
    """``config`` with tile sizes given in image pixels converted to ``module``'s own pixels.

    The tiler measures tiles at the module's full resolution. Usually that is the image's, but a
    VAE may fold pixels into channels outside the module (Wan 2.2 patchifies 2x2, so its decoder
    works at half the image size): ``image_ratio`` (image pixels per latent pixel, e.g. 16) over
    the module's own factor (``2**levels``, e.g. 8) gives the fold. Unrecognised modules and
    automatic sizes (0) are left as they are.
    """
    family = detect(module)
    if family is None:
        return config
    try:
        own = family.build(module).align
    except Unsupported:
        return config
    fold = max(1, image_ratio // own)
    if fold == 1:
        return config
    return replace(config, tile_size=config.tile_size // fold, min_tile_size=config.min_tile_size // fold)


def tiled(module: torch.nn.Module, config: TilingConfig, **kwargs: Any) -> ForwardHook:
    """A hook (use it in ``with``) that tiles every call of ``module`` until the block ends."""
    return ForwardHook(module, TiledForward(config, **kwargs))
