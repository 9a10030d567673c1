"""The registry of VAE families the tiler recognises, detected by module structure only.

Each :class:`Family` declares how to recognise an encoder or decoder from its attribute layout
(never its class name) and how to turn it into a :class:`~..program.Program`. Detection walks the
registry in order; the first family whose detector matches wins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..image.program import Program
from ..video.program import CausalProgram
from . import comfy_2d, diffusers_2d, wan_comfy, wan_diffusers
from .common import Unsupported


@dataclass(frozen=True)
class Family:
    """One supported layout: ``detect`` recognises it, ``build`` makes its tile program; ``label``
    is what users call the VAEs of this layout (for messages), ``name`` a stable id (for logs)."""

    name: str
    role: str
    dims: int
    detect: Callable[[nn.Module], bool]
    build: Callable[[nn.Module], Program | CausalProgram]
    label: str


FAMILIES: tuple[Family, ...] = (
    Family(
        "comfyui-2d-decoder", "decoder", 2, comfy_2d.is_decoder, comfy_2d.build_decoder, "SD1.x / SDXL / SD3 / Flux VAE"
    ),
    Family(
        "comfyui-2d-encoder", "encoder", 2, comfy_2d.is_encoder, comfy_2d.build_encoder, "SD1.x / SDXL / SD3 / Flux VAE"
    ),
    Family(
        "diffusers-2d-decoder",
        "decoder",
        2,
        diffusers_2d.is_decoder,
        diffusers_2d.build_decoder,
        "SD1.x / SDXL / SD3 / Flux VAE (diffusers)",
    ),
    Family(
        "diffusers-2d-encoder",
        "encoder",
        2,
        diffusers_2d.is_encoder,
        diffusers_2d.build_encoder,
        "SD1.x / SDXL / SD3 / Flux VAE (diffusers)",
    ),
    Family(
        "comfyui-wan21-decoder",
        "decoder",
        3,
        wan_comfy.is_wan21_decoder,
        wan_comfy.build_decoder,
        "Wan 2.1 / Qwen-Image VAE",
    ),
    Family(
        "comfyui-wan21-encoder",
        "encoder",
        3,
        wan_comfy.is_wan21_encoder,
        wan_comfy.build_encoder,
        "Wan 2.1 / Qwen-Image VAE",
    ),
    Family("comfyui-wan22-decoder", "decoder", 3, wan_comfy.is_wan22_decoder, wan_comfy.build_decoder, "Wan 2.2 VAE"),
    Family("comfyui-wan22-encoder", "encoder", 3, wan_comfy.is_wan22_encoder, wan_comfy.build_encoder, "Wan 2.2 VAE"),
    Family(
        "diffusers-wan-decoder",
        "decoder",
        3,
        wan_diffusers.is_decoder,
        wan_diffusers.build_decoder,
        "Wan / Qwen-Image VAE (diffusers)",
    ),
    Family(
        "diffusers-wan-encoder",
        "encoder",
        3,
        wan_diffusers.is_encoder,
        wan_diffusers.build_encoder,
        "Wan / Qwen-Image VAE (diffusers)",
    ),
)


LOOKED_FOR = (
    "ComfyUI's Encoder/Decoder (conv_in, down/up, mid.block_1/attn_1/block_2, norm_out, conv_out), "
    "diffusers' (conv_in as a 2D convolution, down_blocks/up_blocks, mid_block, conv_norm_out, conv_out), "
    "ComfyUI's Wan Encoder3d/Decoder3d (conv1, downsamples/upsamples, middle, head) and diffusers' "
    "Wan/Qwen-Image ones (conv_in as a causal 3D convolution, down_blocks/up_blocks, mid_block, norm_out, conv_out)"
)
"""What the detectors look for, for the warning when none matches."""


def detect(module: nn.Module) -> Family | None:
    """The first registered family whose structural detector matches ``module``, or None."""
    for family in FAMILIES:
        if family.detect(module):
            return family
    return None


__all__ = ["FAMILIES", "LOOKED_FOR", "Family", "Unsupported", "detect"]
