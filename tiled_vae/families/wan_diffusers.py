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

from ..causal_program import CausalProgram, CausalStage, StageFn, cached_conv
from .common import Unsupported
from .wan_common import (
    block_stage,
    count_slots,
    forward_params,
    group_stages,
    head_stage,
    input_stage,
    is_causal_conv,
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


def _check_mid(mid: nn.Module) -> None:
    if not hasattr(mid, "resnets") or not hasattr(mid, "attentions"):
        raise Unsupported("mid_block has no resnets/attentions")


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


def _block_stages(block: nn.Module, name: str, level: int) -> tuple[list[CausalStage], int]:
    """A block as stages: a Wan 2.2 group (``avg_shortcut``) or an up block splits into its parts;
    any other block (a resnet, a resampler) is one stage."""
    if hasattr(block, "avg_shortcut"):
        return group_stages(name, level, _parts(block, name), block.avg_shortcut)
    if hasattr(block, "resnets"):
        return group_stages(name, level, _parts(block, name), None)
    stage, factor = block_stage(name, block, level, _plain_call(block))
    return [stage], factor


def build_decoder(dec: nn.Module) -> CausalProgram:
    """Decoder as: global ``conv_in`` + ``mid_block`` at latent size, tiled up blocks and head."""
    _check_mid(dec.mid_block)
    levels = sum(1 for m in dec.up_blocks.modules() if getattr(m, "mode", "").startswith("upsample"))

    def head(x: torch.Tensor, cache: list[Any] | None, idx: list[int], first: bool) -> torch.Tensor:
        return dec.mid_block(cached_conv(dec.conv_in, x, cache, idx), cache, idx)

    stages = [
        CausalStage(
            "conv_in+mid_block",
            head,
            level=levels,
            slots=count_slots([dec.conv_in, dec.mid_block]),
            c_in=dec.conv_in.in_channels,
            c_out=dec.conv_in.out_channels,
            tiled=False,
        )
    ]
    level, time_factor = levels, 1
    for i, block in enumerate(dec.up_blocks):
        new, factor = _block_stages(block, f"up_blocks.{i}", level)
        stages += new
        level, time_factor = new[-1].out_level, time_factor * factor
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
    """Encoder as: tiled ``conv_in`` and down blocks, then a global ``mid_block`` + head at latent size."""
    _check_mid(enc.mid_block)
    stages = [input_stage("conv_in", enc.conv_in)]
    level = 0
    for i, block in enumerate(enc.down_blocks):
        new, _ = _block_stages(block, f"down_blocks.{i}", level)
        stages += new
        level = new[-1].out_level
    out = _out_stage(enc, level)

    def tail(x: torch.Tensor, cache: list[Any] | None, idx: list[int], first: bool) -> torch.Tensor:
        return out.fn(enc.mid_block(x, cache, idx), cache, idx, first)

    stages.append(
        CausalStage(
            "mid_block+conv_out",
            tail,
            level=level,
            slots=count_slots([enc.mid_block, enc.conv_out]),
            c_in=enc.conv_out.in_channels,
            c_out=enc.conv_out.out_channels,
            tiled=False,
        )
    )
    return CausalProgram(
        stages=stages,
        levels=level,
        in_level=0,
        out_level=level,
        in_channels=enc.conv_in.in_channels,
        call_args=forward_params(enc),
    )
