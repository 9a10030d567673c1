"""ComfyUI as the benchmarks' host: import ``comfy.*`` alone, build its VAEs with random weights, and run
its own tiled VAE calls with the VAEDecodeTiled / VAEEncodeTiled node defaults.

Only ``comfy.*`` is imported, never ComfyUI's ``nodes.py`` (which needs PyAV and torchsde): what the
tiled nodes do is two calls, ``comfy.sd.VAE.decode_tiled`` and ``encode_tiled``, with the node's
arguments worked out below. Run with a Python that has ComfyUI's requirements, ``COMFYUI_PATH``
pointing at a ComfyUI checkout.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch

from .common import randomise_

NODE_TILE = 512
NODE_OVERLAP = 64
NODE_TEMPORAL_SIZE = 64
NODE_TEMPORAL_OVERLAP = 8
"""VAEDecodeTiled / VAEEncodeTiled defaults (ComfyUI 0.3.64): tile 512 px, overlap 64 px, 64 frames, overlap 8."""

SD_DDCONFIG: dict[str, Any] = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [],
    "dropout": 0.0,
}
"""ComfyUI's SD/SDXL ``AutoencoderKL`` (the only size ``comfy.sd.VAE`` builds for that family)."""

WAN21_CONFIG: dict[str, Any] = {
    "dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
}
"""ComfyUI's Wan 2.1 VAE (also Qwen-Image's) as ``comfy.sd.VAE`` builds it. The class's own default
``temperal_downsample`` differs: a state dict made with it leaves the clip-only ``time_conv`` layers
of the loaded VAE unset (uninitialised memory), which gave NaN on every 81-frame row."""


def import_comfy(device: torch.device) -> None:
    """Make ``comfy.*`` importable from ``COMFYUI_PATH`` the way ComfyUI's ``main.py`` does: on the
    path, ``--cpu`` set for a CPU run before ``comfy.model_management`` loads, and ``utils.extra_config``
    imported first (after ``comfy`` is on the path, ``import utils`` would find ``comfy/utils.py``)."""
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        raise SystemExit("COMFYUI_PATH is not set: point it at a ComfyUI checkout (and run with its Python)")
    if path not in sys.path:
        sys.path.insert(0, path)
    from comfy.cli_args import args

    if device.type == "cpu":
        args.cpu = True
    import utils.extra_config  # noqa: F401


def load_vae(model: torch.nn.Module, dtype: torch.dtype) -> Any:
    """``comfy.sd.VAE`` from ``model``'s weights in ``dtype``, checked to hold every one of them.

    ComfyUI builds its own module from the key names and loads non-strictly, so a weight it does not
    receive would stay uninitialised memory; this raises instead.
    """
    import comfy.sd

    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    vae = comfy.sd.VAE(sd=sd, dtype=dtype)
    built = vae.first_stage_model.state_dict()
    missing = sorted(set(built) - set(sd))
    wrong = sorted(k for k in set(built) & set(sd) if built[k].shape != sd[k].shape)
    if missing or wrong:
        raise SystemExit(
            f"comfy.sd.VAE built a different {type(vae.first_stage_model).__name__} than the benchmark's: "
            f"weights missing {missing[:4]}, shapes differ {wrong[:4]}; fix the benchmark's model config"
        )
    return vae


def sd_model() -> torch.nn.Module:
    """ComfyUI's SD/SDXL-architecture ``AutoencoderKL`` with the benchmarks' random weights (fp32, CPU)."""
    from comfy.ldm.models.autoencoder import AutoencoderKL

    return randomise_(AutoencoderKL(ddconfig=SD_DDCONFIG, embed_dim=4))


def wan21_model() -> torch.nn.Module:
    """ComfyUI's Wan 2.1 / Qwen-Image ``WanVAE`` with the benchmarks' random weights (fp32, CPU)."""
    from comfy.ldm.wan.vae import WanVAE

    return randomise_(WanVAE(**WAN21_CONFIG))


def frames(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI images as the nodes return them: a video's (B, T, H, W, C) as frames (B*T, H, W, C)."""
    return images.reshape(-1, *images.shape[-3:]) if images.ndim == 5 else images


def decode_tiled(
    vae: Any,
    z: torch.Tensor,
    tile: int = NODE_TILE,
    overlap: int = NODE_OVERLAP,
    temporal_size: int = NODE_TEMPORAL_SIZE,
    temporal_overlap: int = NODE_TEMPORAL_OVERLAP,
) -> torch.Tensor:
    """What VAEDecodeTiled returns for these settings: its argument rules, then ``vae.decode_tiled``.

    The node shrinks the overlap to a quarter of a small tile and a temporal overlap that is over half
    the temporal tile, and converts pixel and frame counts to latent units before calling.
    """
    overlap = min(overlap, tile // 4)
    if temporal_size < 2 * temporal_overlap:
        temporal_overlap //= 2
    frames_per_latent = vae.temporal_compression_decode()
    tile_t = overlap_t = None
    if frames_per_latent is not None:
        tile_t = max(2, temporal_size // frames_per_latent)
        overlap_t = max(1, min(tile_t // 2, temporal_overlap // frames_per_latent))
    px = vae.spacial_compression_decode()
    images = vae.decode_tiled(
        z, tile_x=tile // px, tile_y=tile // px, overlap=overlap // px, tile_t=tile_t, overlap_t=overlap_t
    )
    return frames(images)


def encode_tiled(
    vae: Any,
    pixels: torch.Tensor,
    tile: int = NODE_TILE,
    overlap: int = NODE_OVERLAP,
    temporal_size: int = NODE_TEMPORAL_SIZE,
    temporal_overlap: int = NODE_TEMPORAL_OVERLAP,
) -> torch.Tensor:
    """What VAEEncodeTiled returns for these settings: ``vae.encode_tiled`` with the node's arguments
    as given (the node passes them on unchanged; an overlap equal to the tile fails inside ComfyUI)."""
    return vae.encode_tiled(
        pixels[..., :3], tile_x=tile, tile_y=tile, overlap=overlap, tile_t=temporal_size, overlap_t=temporal_overlap
    )


def tiled_overlap(tile: int) -> int:
    """The overlap the comparison runs at: the node default, or a quarter of a tile too small for it
    (VAEDecodeTiled's own rule; applied to encodes too, which fail with an overlap as large as the tile)."""
    return min(NODE_OVERLAP, tile // 4)


def tiled_label(tile: int) -> str:
    """The comparison row's name, with its tile / overlap / temporal size / temporal overlap."""
    settings = f"{tile}/{tiled_overlap(tile)}/{NODE_TEMPORAL_SIZE}/{NODE_TEMPORAL_OVERLAP}"
    return f"comfyui VAEDecodeTiled/VAEEncodeTiled {settings}"


def unload_all() -> None:
    """Let ComfyUI's memory manager drop every model it loaded (the fp32 reference VAE after its run)."""
    import comfy.model_management as mm

    mm.unload_all_models()
    mm.soft_empty_cache()
