"""diffusers' causal video VAEs: the encoders and decoders of ``AutoencoderKLWan`` and ``AutoencoderKLQwenImage``.

Layout (diffusers/models/autoencoders/autoencoder_kl_wan.py, autoencoder_kl_qwenimage.py):
``conv_in`` (causal 3D conv); ``down_blocks`` (encoder: residual blocks and resamplers, or Wan 2.2
``WanResidualDownBlock`` groups) or ``up_blocks`` (decoder: ``resnets`` + ``upsamplers``, or Wan
2.2 groups with ``avg_shortcut``); ``mid_block`` (resnets around one attention); ``norm_out``;
``nonlinearity``; ``conv_out``. The 2D diffusers detector does not claim these: their ``conv_in``
is a 3D convolution.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..video.program import CausalProgram, CausalStage, StageFn
from .common import Unsupported
from .wan_common import (
    block_stage,
    conv_stage,
    forward_params,
    group_stages,
    head_stage,
    is_causal_conv,
    middle_stages,
    path_stages,
)

_COMMON = ("mid_block", "norm_out", "nonlinearity", "conv_out")


def _layout(module: nn.Module, path: str) -> bool:
    return (
        is_causal_conv(getattr(module, "conv_in", None))
        and is_causal_conv(getattr(module, "conv_out", None))
        and all(hasattr(module, p) for p in (*_COMMON, path))
        and isinstance(getattr(module, path), nn.ModuleList)
    )


def is_decoder(module: nn.Module) -> bool:
    """diffusers ``WanDecoder3d`` / ``QwenImageDecoder3d``: ``conv_in``, ``mid_block``, ``up_blocks``, head."""
    return _layout(module, "up_blocks")


def is_encoder(module: nn.Module) -> bool:
    """diffusers ``WanEncoder3d`` / ``QwenImageEncoder3d``: ``conv_in``, ``down_blocks``, ``mid_block``, head."""
    return _layout(module, "down_blocks")


def _plain_call(block: nn.Module) -> StageFn:
    """A resnet or resampler, called as the host's loops call it (positional cache arguments)."""

    def run(x: torch.Tensor, cache: list[Any] | None, idx: list[int], first_chunk: bool) -> torch.Tensor:
        return block(x) if cache is None else block(x, cache, idx)

    return run


def _parts(block: nn.Module, name: str) -> list[tuple[str, nn.Module, StageFn]]:
    """The resnets and the resampler of an up/down block, each a stage (a smaller reach per stage
    than the whole block: less recomputation)."""
    if getattr(block, "attentions", None):
        raise Unsupported(f"{name} has attention at a tiled resolution")
    parts = [(f"{name}.resnets.{j}", r, _plain_call(r)) for j, r in enumerate(block.resnets)]
    resamplers = getattr(block, "upsamplers", None)
    if resamplers is not None:
        if len(resamplers) != 1:
            raise Unsupported(f"{name} has {len(resamplers)} upsamplers")
        parts.append((f"{name}.upsamplers.0", resamplers[0], _plain_call(resamplers[0])))
    for attr in ("upsampler", "downsampler"):
        m = getattr(block, attr, None)
        if m is not None:
            parts.append((f"{name}.{attr}", m, _plain_call(m)))
    return parts


def _mid(mid: nn.Module, level: int) -> list[CausalStage]:
    """``mid_block``: its resnets with the attentions between them, in the order its forward runs them."""
    if not hasattr(mid, "resnets") or not hasattr(mid, "attentions"):
        raise Unsupported("mid_block has no resnets/attentions")
    layers = [("resnets.0", mid.resnets[0], _plain_call(mid.resnets[0]))]
    for j, (attn, resnet) in enumerate(zip(mid.attentions, mid.resnets[1:], strict=True)):
        if attn is not None:
            layers.append((f"attentions.{j}", attn, _plain_call(attn)))
        layers.append((f"resnets.{j + 1}", resnet, _plain_call(resnet)))
    return middle_stages("mid_block", layers, level)


def _block_stages(name: str, block: nn.Module, level: int) -> tuple[list[CausalStage], int]:
    """A block as stages: a Wan 2.2 group (``avg_shortcut``) or an up block splits into its parts;
    any other block (a resnet, a resampler) is one stage."""
    if hasattr(block, "avg_shortcut"):
        return group_stages(name, level, _parts(block, name), block.avg_shortcut)
    if hasattr(block, "resnets"):
        return group_stages(name, level, _parts(block, name), None)
    stage, factor = block_stage(name, block, level, _plain_call(block))
    return [stage], factor


def build_decoder(dec: nn.Module) -> CausalProgram:
    """Decoder as stages: ``conv_in`` and ``mid_block`` at latent size, the up blocks, the head."""
    levels = sum(1 for m in dec.up_blocks.modules() if getattr(m, "mode", "").startswith("upsample"))
    path, level, time_factor = path_stages("up_blocks", dec.up_blocks, levels, _block_stages)
    stages = [conv_stage("conv_in", levels, dec.conv_in), *_mid(dec.mid_block, levels), *path]
    if level != 0:
        raise Unsupported(f"the up blocks end at level {level}, not at full resolution")
    stages.append(_out_stage(dec, 0))
    return CausalProgram(
        stages=stages,
        levels=levels,
        in_level=levels,
        out_level=0,
        in_channels=dec.conv_in.in_channels,
        call_args=forward_params(dec),
        time_factor=time_factor,
    )


def _out_stage(module: nn.Module, level: int) -> CausalStage:
    return head_stage("norm_out+conv_out", level, lambda x: module.nonlinearity(module.norm_out(x)), module.conv_out)


def build_encoder(enc: nn.Module) -> CausalProgram:
    """Encoder as stages: ``conv_in`` and the down blocks, then ``mid_block`` and the head at latent size."""
    path, level, _ = path_stages("down_blocks", enc.down_blocks, 0, _block_stages)
    stages = [conv_stage("conv_in", 0, enc.conv_in), *path, *_mid(enc.mid_block, level)]
    stages.append(_out_stage(enc, level))
    return CausalProgram(
        stages=stages,
        levels=level,
        in_level=0,
        out_level=level,
        in_channels=enc.conv_in.in_channels,
        call_args=forward_params(enc),
    )
