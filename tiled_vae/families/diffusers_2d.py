"""diffusers' 2D ``Encoder`` / ``Decoder`` (diffusers/models/autoencoders/vae.py), as in ``AutoencoderKL``.

Layout: ``conv_in``; ``down_blocks[i].resnets`` / ``.downsamplers`` (encoder) or
``up_blocks[i].resnets`` / ``.upsamplers`` (decoder, lowest resolution first); ``mid_block``;
``conv_norm_out`` (GroupNorm; the SpatialNorm variant is not supported); ``conv_act``; ``conv_out``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..program import GlobalStep, Program, Step
from .common import Unsupported, conv_step, has_conv2d_in, has_path, resample_step, resnet_steps

_COMMON = ("conv_in", "mid_block", "conv_norm_out", "conv_act", "conv_out")


def is_decoder(module: nn.Module) -> bool:
    """diffusers decoder layout: ``up_blocks`` beside the common parts."""
    return has_conv2d_in(module) and all(has_path(module, p) for p in (*_COMMON, "up_blocks"))


def is_encoder(module: nn.Module) -> bool:
    """diffusers encoder layout: ``down_blocks`` beside the common parts."""
    return has_conv2d_in(module) and all(has_path(module, p) for p in (*_COMMON, "down_blocks"))


def _resnets(block: nn.Module, level: int, name: str) -> list[Step]:
    if getattr(block, "attentions", None):
        raise Unsupported(f"{name} has attention at a tiled resolution")
    steps: list[Step] = []
    for j, r in enumerate(block.resnets):
        if getattr(r, "upsample", None) is not None or getattr(r, "downsample", None) is not None:
            raise Unsupported(f"{name}.resnets.{j} resamples inside the block")
        if getattr(r, "time_emb_proj", None) is not None:
            raise Unsupported(f"{name}.resnets.{j} takes a time embedding")
        steps += resnet_steps(
            level,
            f"{name}.resnets.{j}",
            r.norm1,
            r.conv1,
            r.norm2,
            r.conv2,
            r.nonlinearity,
            r.dropout,
            r.conv_shortcut,
            float(r.output_scale_factor),
        )
    return steps


def _resampler(block: nn.Module, name: str, up: bool) -> nn.Module | None:
    mods = block.upsamplers if up else block.downsamplers
    if not mods:
        return None
    if len(mods) != 1:
        raise Unsupported(f"{name} has {len(mods)} resamplers")
    m = mods[0]
    conv = getattr(m, "conv", None)
    if getattr(m, "norm", None) is not None or not getattr(m, "use_conv", False) or conv is None:
        raise Unsupported(f"{name} resampler is not a plain convolutional one")
    if up and (getattr(m, "use_conv_transpose", False) or not getattr(m, "interpolate", True)):
        raise Unsupported(f"{name} upsamples with a transposed convolution")
    if not up and m.padding != 0:
        raise Unsupported(f"{name} downsampler pads symmetrically")
    return m


def build_decoder(dec: nn.Module) -> Program:
    """Decoder as: global head (``conv_in`` + ``mid_block``), tiled up blocks and output."""
    levels = sum(1 for b in dec.up_blocks if b.upsamplers)

    def head(z: torch.Tensor) -> torch.Tensor:
        return dec.mid_block(dec.conv_in(z), None)

    steps: list[Step] = [GlobalStep("conv_in+mid_block", head)]
    level = levels
    for i, block in enumerate(dec.up_blocks):
        steps += _resnets(block, level, f"up_blocks.{i}")
        up = _resampler(block, f"up_blocks.{i}", up=True)
        if up is not None:
            steps.append(resample_step(level, f"up_blocks.{i}.upsamplers.0", up, up.conv, up=True))
            level -= 1
    steps.append(conv_step(0, "conv_norm_out+conv_out", dec.conv_out, dec.conv_norm_out, dec.conv_act))
    return Program(steps=steps, levels=levels, in_level=levels, out_level=0, in_channels=dec.conv_in.in_channels)


def build_encoder(enc: nn.Module) -> Program:
    """Encoder as: tiled ``conv_in`` and down blocks, then a global tail (mid block and output)."""
    levels = sum(1 for b in enc.down_blocks if b.downsamplers)
    steps: list[Step] = [conv_step(0, "conv_in", enc.conv_in)]
    level = 0
    for i, block in enumerate(enc.down_blocks):
        steps += _resnets(block, level, f"down_blocks.{i}")
        down = _resampler(block, f"down_blocks.{i}", up=False)
        if down is not None:
            steps.append(resample_step(level, f"down_blocks.{i}.downsamplers.0", down, down.conv, up=False))
            level += 1

    def tail(h: torch.Tensor) -> torch.Tensor:
        return enc.conv_out(enc.conv_act(enc.conv_norm_out(enc.mid_block(h))))

    steps.append(GlobalStep("mid_block+conv_norm_out+conv_out", tail))
    return Program(steps=steps, levels=levels, in_level=0, out_level=levels, in_channels=enc.conv_in.in_channels)
