"""ComfyUI glue for tiled VAE calls: load the VAE for a tile's worth of memory, hook, run, convert.

Mirrors what ``comfy.sd.VAE.decode`` / ``encode`` do around ``first_stage_model`` (input cropping
and scaling, dtype and device moves, output conversion) but asks ComfyUI's memory manager only for
one tile's working memory, never for the full-image estimate. The pack's checks (:mod:`.vae_checks`,
then :func:`~..tiled_vae.check_call`) run first on every path, before any ComfyUI call that fails
on bad input with a raw error (its memory estimates, ``load_models_gpu``, ``post_quant_conv``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..tiled_vae import RunReport, TilingConfig, check_call, in_image_pixels, tiled
from .vae_checks import check_image, check_latent, check_settings

log = logging.getLogger("comfyui-quadtree-tile.nodes")

_PLANNING_TILE = 512
"""Tile side used for the memory request when the tile size is automatic."""


def _comfy() -> tuple[Any, Any]:
    import comfy.model_management as mm
    import comfy.utils as cu

    return mm, cu


def _load(vae: Any, estimate: Any, shape: tuple[int, ...]) -> None:
    mm, _ = _comfy()
    mm.load_models_gpu(
        [vae.patcher], memory_required=estimate(shape, vae.vae_dtype), force_full_load=vae.disable_offload
    )


def _hook_kwargs(node_id: str | None) -> dict[str, Any]:
    mm, cu = _comfy()
    bar = cu.ProgressBar(1, node_id=node_id)

    def progress(done: int, total: int) -> None:
        bar.update_absolute(done, total)

    return {
        "progress": progress,
        "check_interrupt": mm.throw_exception_if_processing_interrupted,
        "free_memory": mm.get_free_memory,
    }


def tile_shape(latent_shape: tuple[int, ...], config: TilingConfig, ratio: int) -> tuple[int, ...]:
    """A latent shape of one tile (same batch, channels and frames) for memory estimates."""
    side = max(1, (config.tile_size or _PLANNING_TILE) // ratio)
    return (*latent_shape[:-2], min(side, latent_shape[-2]), min(side, latent_shape[-1]))


def _warn_dropped_frames(vae: Any, x: torch.Tensor) -> None:
    """Say so when a video VAE will ignore trailing frames (Wan encodes 1 + 4k frames), as VAE Encode does silently."""
    down, up = getattr(vae, "downscale_ratio", None), getattr(vae, "upscale_ratio", None)
    if x.ndim != 5 or not isinstance(down, tuple) or not isinstance(up, tuple) or not callable(down[0]):
        return
    frames = x.shape[2]
    used = up[0](down[0](frames))
    if used < frames:
        log.warning(
            "Quadtree VAE Encode: %d frames given, the VAE encodes the first %d and ignores the last %d "
            "(it takes 1 + 4k frames); trim or pad the video to avoid losing them",
            frames,
            used,
            frames - used,
        )


def decode(
    vae: Any, latent: torch.Tensor, config: TilingConfig, node_id: str | None = None
) -> tuple[torch.Tensor, RunReport]:
    """Decode ``latent`` with the tiled decoder; returns ComfyUI images (N, H, W, C) and the run report."""
    vae.throw_exception_if_invalid()
    check_settings(config)
    check_latent(vae, latent)
    model = vae.first_stage_model
    check_call(model, latent, "decode")
    ratio = vae.spacial_compression_decode()
    _load(vae, vae.memory_used_decode, tile_shape(tuple(latent.shape), config, ratio))
    config = in_image_pixels(config, getattr(model, "decoder", model), ratio)
    kwargs = _hook_kwargs(node_id)
    with tiled(model, config, untiled_memory=lambda t: vae.memory_used_decode(t.shape, vae.vae_dtype), **kwargs) as h:
        out = model.decode(latent.to(vae.vae_dtype).to(vae.device))
    images = vae.process_output(out.to(vae.output_device).float()).movedim(1, -1)
    if images.ndim == 5:  # video VAEs give (B, T, H, W, C); ComfyUI images are frames
        images = images.reshape(-1, *images.shape[-3:])
    return images, h.handler.report


def encode(
    vae: Any, pixels: torch.Tensor, config: TilingConfig, node_id: str | None = None
) -> tuple[torch.Tensor, RunReport]:
    """Encode ComfyUI images (B, H, W, C) with the tiled encoder; returns the latent and the run report."""
    vae.throw_exception_if_invalid()
    check_settings(config)
    check_image(vae, pixels)
    model = vae.first_stage_model
    x = encoder_input(vae, pixels)
    check_call(model, x, "encode")
    _warn_dropped_frames(vae, x)
    _load(vae, vae.memory_used_encode, tile_shape(tuple(x.shape), config, 1))
    config = in_image_pixels(config, getattr(model, "encoder", model), vae.spacial_compression_encode())
    kwargs = _hook_kwargs(node_id)
    with tiled(model, config, untiled_memory=lambda t: vae.memory_used_encode(t.shape, vae.vae_dtype), **kwargs) as h:
        latent = model.encode(x.to(vae.vae_dtype).to(vae.device))
    return latent.to(vae.output_device).float(), h.handler.report


def encoder_input(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """ComfyUI images as ``first_stage_model.encode`` takes them: cropped to the VAE's multiple,
    channels first, a frame axis for video VAEs, scaled to the VAE's range (as ``VAE.encode``)."""
    x = vae.vae_encode_crop_pixels(pixels[..., :3]).movedim(-1, 1)
    if vae.latent_dim == 3 and x.ndim < 5:
        x = x.unsqueeze(2) if vae.not_video else x.movedim(1, 0).unsqueeze(0)
    return vae.process_input(x)
