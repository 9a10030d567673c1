"""ComfyUI's 2D ``Encoder`` / ``Decoder`` (comfy/ldm/modules/diffusionmodules/model.py).

Used by SD1.x, SD2.x and SDXL (4 latent channels, inside ``AutoencoderKL``) and by Flux and SD3
(16 channels, inside ``AutoencodingEngine``). Layout: ``conv_in``; ``down[i].block[j]`` /
``down[i].downsample`` (encoder) or ``up[i].block[j]`` / ``up[i].upsample`` (decoder, indexed by
resolution level, run from the lowest); ``mid.block_1`` / ``mid.attn_1`` / ``mid.block_2``;
``norm_out`` (GroupNorm 32); ``conv_out``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..image.program import AttentionStep, Program, Step
from .common import (
    Unsupported,
    conv_step,
    group_norm,
    has_conv2d_in,
    has_path,
    pointwise,
    resample_step,
    resnet_steps,
    silu,
)

_COMMON = ("conv_in", "mid.block_1", "mid.attn_1", "mid.block_2", "norm_out", "conv_out", "num_resolutions")


def is_decoder(module: nn.Module) -> bool:
    """ComfyUI 2D decoder layout: the common parts plus ``up[i].block``."""
    return (
        has_conv2d_in(module)
        and all(has_path(module, p) for p in (*_COMMON, "up"))
        and all(hasattr(u, "block") for u in module.up)
    )


def is_encoder(module: nn.Module) -> bool:
    """ComfyUI 2D encoder layout: the common parts plus ``down[i].block``."""
    return (
        has_conv2d_in(module)
        and all(has_path(module, p) for p in (*_COMMON, "down"))
        and all(hasattr(d, "block") for d in module.down)
    )


def _shortcut(block: nn.Module) -> nn.Module | None:
    if block.in_channels == block.out_channels:
        return None
    return block.conv_shortcut if block.use_conv_shortcut else block.nin_shortcut


def _resnet(block: nn.Module, level: int, name: str) -> list[Step]:
    return resnet_steps(
        level, name, block.norm1, block.conv1, block.norm2, block.conv2, block.swish, block.dropout, _shortcut(block)
    )


def _attention(attn: nn.Module, level: int, name: str) -> AttentionStep:
    """``AttnBlock``: ``x + proj_out(attention(q(h), k(h), v(h)))``, ``h = norm(x)``, one head over all channels."""
    c = attn.in_channels
    return AttentionStep(
        name=name,
        level=level,
        norm=group_norm(attn.norm, f"{name}.norm"),
        q=pointwise(attn.q, c, f"{name}.q"),
        k=pointwise(attn.k, c, f"{name}.k"),
        v=pointwise(attn.v, c, f"{name}.v"),
        proj=pointwise(attn.proj_out, c, f"{name}.proj_out"),
        channels=c,
        heads=1,
        scale=c**-0.5,
    )


def _mid(mid: nn.Module, level: int) -> list[Step]:
    """``mid.block_1``, ``mid.attn_1``, ``mid.block_2`` at the latent level."""
    return [
        *_resnet(mid.block_1, level, "mid.block_1"),
        _attention(mid.attn_1, level, "mid.attn_1"),
        *_resnet(mid.block_2, level, "mid.block_2"),
    ]


def _no_level_attention(levels: nn.ModuleList, kind: str) -> None:
    for i, lvl in enumerate(levels):
        if len(lvl.attn) > 0:
            raise Unsupported(f"{kind}[{i}] has attention at a tiled resolution")


def build_decoder(dec: nn.Module) -> Program:
    """Decoder as steps: ``conv_in`` and the mid block at latent size, the up path, the output conv."""
    if dec.give_pre_end:
        raise Unsupported("give_pre_end=True returns before norm_out")
    _no_level_attention(dec.up, "up")
    levels = dec.num_resolutions - 1
    steps: list[Step] = [conv_step(levels, "conv_in", dec.conv_in), *_mid(dec.mid, levels)]
    for i in reversed(range(dec.num_resolutions)):
        for j, block in enumerate(dec.up[i].block):
            steps += _resnet(block, i, f"up.{i}.block.{j}")
        if i != 0:
            up = dec.up[i].upsample
            if not up.with_conv or not isinstance(up.scale_factor, (int, float)) or up.scale_factor != 2:
                raise Unsupported(f"up.{i}.upsample is not a 2x upsample with a convolution")
            steps.append(resample_step(i, f"up.{i}.upsample", up, up.conv, up=True))
    steps.append(conv_step(0, "norm_out+conv_out", dec.conv_out, dec.norm_out, silu))
    return Program(
        steps=steps,
        levels=levels,
        in_level=levels,
        out_level=0,
        in_channels=dec.conv_in.in_channels,
        post=torch.tanh if dec.tanh_out else None,
    )


def build_encoder(enc: nn.Module) -> Program:
    """Encoder as steps: ``conv_in`` and the down path, then the mid block and output conv at latent size."""
    _no_level_attention(enc.down, "down")
    levels = enc.num_resolutions - 1
    steps: list[Step] = [conv_step(0, "conv_in", enc.conv_in)]
    for i in range(enc.num_resolutions):
        for j, block in enumerate(enc.down[i].block):
            steps += _resnet(block, i, f"down.{i}.block.{j}")
        if i != enc.num_resolutions - 1:
            down = enc.down[i].downsample
            if not down.with_conv:
                raise Unsupported(f"down.{i}.downsample averages instead of convolving")
            steps.append(resample_step(i, f"down.{i}.downsample", down, down.conv, up=False))
    steps += _mid(enc.mid, levels)
    steps.append(conv_step(levels, "norm_out+conv_out", enc.conv_out, enc.norm_out, silu))
    return Program(steps=steps, levels=levels, in_level=0, out_level=levels, in_channels=enc.conv_in.in_channels)
