"""Small random-weight 2D VAEs of both layouts for the tiled-VAE tests."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from mirrors.comfy_vae_2d import Decoder, Encoder, small_config
from quadtree_tile.benchmarks.common import Uniform, randomise_


def _randomise(module: torch.nn.Module) -> torch.nn.Module:
    """Weights large enough that GroupNorm statistics and borders matter (the pack's one randomiser)."""
    spread = lambda fan_in: (1.5 / fan_in) ** 0.5  # noqa: E731
    return randomise_(
        module, 1234, matrices="normal", spread=spread, vectors=Uniform(-0.5, 0.5), norm_scales=None, sort=False
    )


def comfy_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    """ComfyUI-layout encoder and decoder (mirror), 8x, 4 latent channels."""
    return _randomise(Encoder(**small_config())), _randomise(Decoder(**small_config()))


def diffusers_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    """diffusers ``AutoencoderKL`` encoder and decoder with a small 8x config."""
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
    )
    _randomise(vae)
    return vae.encoder, vae.decoder
