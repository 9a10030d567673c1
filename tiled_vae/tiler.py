"""The hook handler: recognise the module, hand the call to the 2D or the video path, fall back safely."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from .families import LOOKED_FOR, Family, Unsupported, detect
from .geometry import Rect
from .hook import Hooks, MethodHook
from .image.budget import image_needs
from .image.calls import run_image_call
from .image.program import Program
from .planner import plan_for
from .policy import (
    Progress,
    RunReport,
    TilingConfig,
    decide,
    default_free_memory,
)
from .validation import check_input, checks_for, full_size
from .video.budget import clip_needs
from .video.chunk_calls import ChunkCalls
from .video.hosts import detect_host
from .video.program import CausalProgram, ClipShape
from .video.tile_major import check_host_input, clip_needs_of, run_host_call

log = logging.getLogger("comfyui-quadtree-tile.tiled_vae")


class TiledForward:
    """A :class:`~.hook.MethodHook` handler that runs a VAE encoder or decoder tile by tile.

    It returns what the untiled module returns (up to float rounding). 2D modules go to the image
    path (:mod:`.image.calls`); a recognised video VAE's own decode/encode to the tile-major path
    (:mod:`.video.tile_major`); causal video encoders/decoders called chunk by chunk by someone
    else to the chunk path (:mod:`.video.chunk_calls`). Modules it does not recognise (with a warning), calls with
    arguments it cannot honour and ``mode="untiled"`` go to the original forward with every
    argument. ``untiled_memory(x)`` is the host's estimate of the untiled call's device bytes
    (ComfyUI's ``memory_used_decode``/``encode``); without it the path's own count is used.
    """

    def __init__(
        self,
        config: TilingConfig,
        progress: Progress | None = None,
        check_interrupt: Callable[[], None] | None = None,
        free_memory: Callable[[torch.device], int | None] = default_free_memory,
        untiled_memory: Callable[[torch.Tensor], float | None] | None = None,
    ) -> None:
        self.config = config
        self.progress = progress
        self.check_interrupt = check_interrupt
        self.free_memory = free_memory
        self.untiled_memory = untiled_memory
        self.report = RunReport()
        self._chunks: ChunkCalls | None = None

    def __call__(self, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        module = original.__self__
        host = detect_host(module)
        if host is not None and original.__name__ in (host.decode_method, host.encode_method):
            role = "decode" if original.__name__ == host.decode_method else "encode"
            return run_host_call(self, host, original, role, args, kwargs)
        family = detect(module)
        if family is None:
            self.report = RunReport(reason="no registered VAE family matches this module's structure")
            if self.config.mode != "untiled":
                log.warning(
                    "%s is not a VAE encoder or decoder this pack can tile (it looked for %s); running it untiled",
                    type(module).__name__,
                    LOOKED_FOR,
                )
            return original(*args, **kwargs)
        if family.dims == 3:
            self._chunks = self._chunks or ChunkCalls(self)
            return self._chunks(original, family, args, kwargs)
        self.report = RunReport(family=family.name)
        return run_image_call(self, original, family, args, kwargs)

    def run_untiled(self, original: Callable[..., Any], reason: str, args: tuple, kwargs: dict) -> Any:
        """Call the original forward with every argument, recording why it ran untiled."""
        self.report.tiled = False
        self.report.reason = reason
        return original(*args, **kwargs)


def plan_tiles(
    module: torch.nn.Module,
    x: torch.Tensor,
    config: TilingConfig,
    role: str,
    free_memory: Callable[[torch.device], int | None] = default_free_memory,
) -> tuple[list[Rect], tuple[int, int]]:
    """The tile plan (rectangles at the module's full resolution) and that full size, that a tiled
    ``role`` (``"decode"`` / ``"encode"``) of ``x`` by ``module`` would use, for previews.

    ``module`` is a whole VAE or its encoder or decoder; ``x`` is what its method takes (a video
    VAE's input has a frame axis). An automatic tile (``tile_size`` 0) is the one the tiled run
    would choose with ``free_memory``. Nothing runs. Raises ValueError when no registered family
    can tile ``module`` or ``x`` does not fit it.
    """
    host = detect_host(module)
    if host is not None:
        part, family = host.part(role)
        program = _built(family, part)
        check_host_input(host, program, role, x)
        needs, shape = clip_needs_of(host, program, role, x, None)
        full = shape.full
        first = x[:, :, :1]
        frame = (host.before_encode(first) if role == "encode" else first)[:, :, 0]
    else:
        found = _part(module, role)
        if found is None:
            raise ValueError(f"{type(module).__name__} has no {role}r this pack can tile")
        family, program = found[1], _built(found[1], found[0])
        check_input(x, program, family, **checks_for(family))
        full = full_size(program, x)
        if family.dims == 3:
            shape = ClipShape([(0, x.shape[2])], full, x.shape[2])
            needs, frame = clip_needs(program.runs(), x.shape[0], shape, x.dtype, None), x[:, :, 0]
        else:
            needs, frame = image_needs(program, x, full, None), x
    decision = decide(replace(config, mode="tiled"), full, program.align, needs, free_memory(x.device))
    cell = program.align if program.in_level == 0 else 1
    return plan_for(config.planner, config.min_tile_size, frame, full, decision.tile, program.align, cell), full


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


def _part(module: torch.nn.Module, role: str) -> tuple[torch.nn.Module, Family] | None:
    """The encoder or decoder a ``role`` call of ``module`` (itself, or a whole VAE's part) goes
    through, and its family; None when no registered family matches."""
    target = module if detect(module) is not None else getattr(module, f"{role}r", None)
    family = detect(target) if isinstance(target, torch.nn.Module) else None
    return (target, family) if family is not None else None


def _built(family: Family, module: torch.nn.Module) -> Program | CausalProgram:
    """``family``'s program of ``module``; ValueError (for a preview) when the variant cannot be tiled."""
    try:
        return family.build(module)
    except Unsupported as e:
        raise ValueError(f"{family.name} cannot be tiled: {e}") from e


def _targets(module: torch.nn.Module) -> list[tuple[torch.nn.Module, str]]:
    """What :func:`tiled` hooks for ``module``: a recognised video VAE's own decode and encode; an
    encoder or decoder of a known family (or, when nothing matches, ``module`` itself); else the
    ``forward`` of those of its ``encoder`` and ``decoder`` that are known."""
    host = detect_host(module)
    if host is not None:
        return [(module, host.decode_method), (module, host.encode_method)]
    if detect(module) is not None:
        return [(module, "forward")]
    parts = [getattr(module, name, None) for name in ("encoder", "decoder")]
    known = [(m, "forward") for m in parts if isinstance(m, torch.nn.Module) and detect(m) is not None]
    return known or [(module, "forward")]


def tiled(module: torch.nn.Module, config: TilingConfig, **kwargs: Any) -> Hooks:
    """Hooks (use them in ``with``) that tile every call of ``module`` until the block ends.

    ``module`` is an encoder or decoder, or a whole VAE (ComfyUI's ``first_stage_model``, a
    diffusers autoencoder): a Wan-family VAE's own decode and encode then run tile-major, other
    VAEs' ``encoder`` and ``decoder`` are hooked. ``kwargs`` go to
    :class:`TiledForward`; the hooks' ``handler`` is that object (its ``report`` says what ran).
    """
    handler = TiledForward(config, **kwargs)
    return Hooks(handler, [MethodHook(m, handler, method) for m, method in _targets(module)])


def check_call(module: torch.nn.Module, x: torch.Tensor, role: str) -> None:
    """Raise ValueError, saying what to do, when ``x`` cannot go through ``module``'s ``role``
    (``"decode"`` or ``"encode"``): wrong rank or channels, too small, NaN or inf. ``module`` is an
    encoder or decoder or a whole VAE. Nothing runs; call it before any host code that could fail
    on bad input (memory estimates included). Modules of no known family get the NaN check only.
    """
    host = detect_host(module)
    found = host.part(role) if host is not None else _part(module, role)
    try:
        program = found[1].build(found[0]) if found is not None else None
    except Unsupported:
        program = None
    if found is None or program is None:
        if not torch.isfinite(x).all():
            raise ValueError(f"the {role} input contains NaN or infinite values; check the node that made it")
        return
    if host is not None:
        check_host_input(host, program, role, x)
    else:
        check_input(x, program, found[1], **checks_for(found[1]))
