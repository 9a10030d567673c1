"""The VAE nodes' checks of what the user connected, in ComfyUI's terms, before ComfyUI sees it.

ComfyUI's own VAE code fails on bad input with raw errors (an ``IndexError`` from a memory
estimate given a 4D latent, a convolution's channel error from ``post_quant_conv``, "Kernel size
can't be greater than actual input size") and decodes a NaN latent into a broken image with only
a numpy warning. The nodes call these checks first, on every path (tiled, auto and untiled): each
says what is wrong with the input and what to do, naming the VAE, both channel counts, the rank
the VAE takes, and an image's size both as given and after ComfyUI's crop to a multiple of the
VAE's factor. The checks read only the ComfyUI ``VAE`` object's attributes (no ``comfy`` import).
"""

from __future__ import annotations

from typing import Any

import torch

from ..tiled_vae import TilingConfig, detect

CHANNELS_BY_VAE = "4 latent channels: SD1.x/SDXL; 16: Flux, SD3, Wan 2.1, Qwen-Image; 48: Wan 2.2"
"""Which VAE makes which latents, for messages about a latent given to the wrong VAE."""

_VIDEO_NAMES = {"wan21": "Wan 2.1 / Qwen-Image", "wan22": "Wan 2.2"}
_IMAGE_NAMES = {4: "SD1.x/SDXL", 16: "Flux/SD3"}


def vae_name(vae: Any) -> str:
    """What a user calls this VAE ("SD1.x/SDXL VAE", "Wan 2.1 / Qwen-Image VAE"), from its structure."""
    model = vae.first_stage_model
    channels = getattr(vae, "latent_channels", None)
    family = detect(getattr(model, "decoder", model)) if isinstance(model, torch.nn.Module) else None
    if family is not None:
        for key, name in _VIDEO_NAMES.items():
            if key in family.name:
                return f"{name} VAE"
        if family.dims == 2 and channels in _IMAGE_NAMES:
            return f"{_IMAGE_NAMES[channels]} VAE"
    return f"{type(model).__name__} VAE ({channels}-channel latents)"


def _shape(x: torch.Tensor) -> str:
    return "x".join(map(str, x.shape))


def check_settings(config: TilingConfig) -> None:
    """Refuse settings that contradict each other."""
    if config.tile_size and config.min_tile_size > config.tile_size:
        raise ValueError(
            f"min_tile_size ({config.min_tile_size} px) is larger than tile_size ({config.tile_size} px): no tile "
            f"can be both. Set min_tile_size to at most {config.tile_size} (0: a quarter of the tile size), or "
            "tile_size to 0 to pick it from free memory."
        )


def check_latent(vae: Any, latent: Any) -> None:
    """Refuse a latent this VAE cannot decode: rank, channels, empty, NaN or infinite values."""
    if not isinstance(latent, torch.Tensor):
        raise ValueError(f"the LATENT holds {type(latent).__name__}, not a tensor; check the node that made it")
    name, dims = vae_name(vae), getattr(vae, "latent_dim", None)
    if dims in (2, 3) and latent.ndim != dims + 2:
        takes = (
            "5D video latents (batch, channels, frames, height, width)"
            if dims == 3
            else "4D image latents (batch, channels, height, width)"
        )
        given = {4: "a 4D image latent", 5: "a 5D video latent"}.get(latent.ndim, f"a {latent.ndim}D tensor")
        todo = (
            "Decode the sampler's output (Qwen-Image and Wan samplers add the frame axis to an empty image "
            "latent), make empty latents for it with an 'Empty ... Latent Video' node, or use the VAE that made "
            "this latent."
            if dims == 3
            else "Use the video VAE that made this latent (e.g. Wan 2.1 / Qwen-Image)."
        )
        raise ValueError(f"this {name} decodes {takes}, but the latent is {given} ({_shape(latent)}). {todo}")
    channels = getattr(vae, "latent_channels", None)
    if channels is not None and latent.ndim >= 2 and latent.shape[1] != channels:
        raise ValueError(
            f"the latent has {latent.shape[1]} channels, but this {name} takes {channels}-channel latents. "
            f"Connect the VAE of the model that made the latent ({CHANNELS_BY_VAE})."
        )
    if latent.numel() == 0:
        raise ValueError(f"the latent is empty ({_shape(latent)}); check the node that made it")
    if not torch.isfinite(latent).all():
        raise ValueError(
            "the latent contains NaN or infinite values, so the image would be broken. Check the node that made "
            "it (a sampler running a model in fp16 that overflows, a broken LoRA or model file)."
        )


def check_image(vae: Any, pixels: Any) -> None:
    """Refuse an IMAGE this VAE cannot encode: not (batch, height, width, 3 or 4), empty, too small
    once ComfyUI crops it to a multiple of the VAE's factor, NaN or infinite values."""
    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[-1] < 3:
        shape = _shape(pixels) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise ValueError(
            f"the image is not an RGB IMAGE (batch, height, width, 3 channels; a 4th, alpha, is dropped): got "
            f"{shape}. Convert it to RGB first."
        )
    if pixels.shape[0] == 0:
        raise ValueError(f"the image batch is empty ({_shape(pixels)}); check the node that made it")
    height, width = int(pixels.shape[1]), int(pixels.shape[2])
    factor = int(vae.spacial_compression_encode())
    if getattr(vae, "crop_input", True):
        kept = (width // factor * factor, height // factor * factor)
        if min(kept) == 0:
            raise ValueError(
                f"the image is {width}x{height} px; cropped to a multiple of {factor} px, as ComfyUI does before "
                f"this VAE, it would be {kept[0]}x{kept[1]} px. This {vae_name(vae)} needs at least {factor}x{factor} "
                "px: resize or pad the image."
            )
    elif min(width, height) < factor:
        raise ValueError(
            f"the image is {width}x{height} px; this {vae_name(vae)} needs at least {factor}x{factor} px: resize "
            "or pad the image."
        )
    if not torch.isfinite(pixels).all():
        raise ValueError("the image contains NaN or infinite pixel values; check the node that made it")
