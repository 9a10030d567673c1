"""ComfyUI's causal video VAEs: ``Encoder3d`` / ``Decoder3d`` of ``comfy/ldm/wan/vae.py`` and ``vae2_2.py``.

Wan 2.1 and Qwen-Image use ``vae.py``; Wan 2.2 uses ``vae2_2.py``, whose blocks carry a
pixel-shuffle shortcut (``avg_shortcut``) and whose decoder takes ``first_chunk``. Layout:
``conv1`` (causal 3D conv); ``downsamples`` (encoder) or ``upsamples`` (decoder): a sequence of
residual blocks and ``Resample`` blocks (Wan 2.1) or of ``Down_/Up_ResidualBlock`` (Wan 2.2);
``middle`` (residual block, attention, residual block); ``head`` (RMS norm, SiLU, causal conv).
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
    sequential,
)


def _layout(module: nn.Module, path: str) -> bool:
    head = getattr(module, "head", None)
    middle = getattr(module, "middle", None)
    return (
        is_causal_conv(getattr(module, "conv1", None))
        and isinstance(getattr(module, path, None), nn.Sequential)
        and isinstance(middle, nn.Sequential)
        and isinstance(head, nn.Sequential)
        and len(head) > 0
        and is_causal_conv(head[-1])
    )


def _residual_blocks(seq: nn.Sequential) -> bool:
    """Wan 2.2 blocks: residual groups with a pixel-shuffle shortcut."""
    return len(seq) > 0 and all(hasattr(b, "avg_shortcut") for b in seq)


def is_wan21_decoder(module: nn.Module) -> bool:
    """ComfyUI Wan 2.1 / Qwen-Image ``Decoder3d``: ``conv1``, ``middle``, flat ``upsamples``, ``head``."""
    return _layout(module, "upsamples") and not _residual_blocks(module.upsamples)


def is_wan22_decoder(module: nn.Module) -> bool:
    """ComfyUI Wan 2.2 ``Decoder3d``: like Wan 2.1 but ``upsamples`` are ``Up_ResidualBlock`` groups."""
    return _layout(module, "upsamples") and _residual_blocks(module.upsamples)


def is_wan21_encoder(module: nn.Module) -> bool:
    """ComfyUI Wan 2.1 / Qwen-Image ``Encoder3d``: ``conv1``, flat ``downsamples``, ``middle``, ``head``."""
    return _layout(module, "downsamples") and not _residual_blocks(module.downsamples)


def is_wan22_encoder(module: nn.Module) -> bool:
    """ComfyUI Wan 2.2 ``Encoder3d``: ``downsamples`` are ``Down_ResidualBlock`` groups."""
    return _layout(module, "downsamples") and _residual_blocks(module.downsamples)


def _block_call(block: nn.Module, with_first_chunk: bool) -> StageFn:
    def run(x: torch.Tensor, cache: list[Any] | None, idx: list[int], first_chunk: bool) -> torch.Tensor:
        if cache is None:
            return block(x)
        if with_first_chunk:
            return block(x, cache, idx, first_chunk)
        return block(x, cache, idx)

    return run


def _stages(name: str, block: nn.Module, level: int, first_chunk: bool) -> tuple[list[CausalStage], int]:
    """A Wan 2.1 block as one stage; a Wan 2.2 group as one stage per inner block."""
    if not hasattr(block, "avg_shortcut"):
        stage, factor = block_stage(name, block, level, _block_call(block, first_chunk))
        return [stage], factor
    inner = block.upsamples if hasattr(block, "upsamples") else block.downsamples
    parts = [(f"{name}.{j}", m, _block_call(m, False)) for j, m in enumerate(inner)]
    return group_stages(name, level, parts, block.avg_shortcut, first_chunk_needs_cache=True)


def _middle(middle: nn.Sequential, level: int) -> list[CausalStage]:
    """``middle``: residual block, attention, residual block (cache passed positionally, as the host does)."""
    return middle_stages("middle", [(str(j), m, _block_call(m, False)) for j, m in enumerate(middle)], level)


def build_decoder(dec: nn.Module) -> CausalProgram:
    """Decoder as stages: ``conv1`` and the middle at latent size, the upsamples, the head."""
    first_chunk = "first_chunk" in forward_params(dec)
    levels = sum(1 for m in dec.upsamples.modules() if getattr(m, "mode", "").startswith("upsample"))
    path, level, time_factor = path_stages(
        "upsamples", dec.upsamples, levels, lambda name, block, at: _stages(name, block, at, first_chunk)
    )
    stages = [conv_stage("conv1", levels, dec.conv1), *_middle(dec.middle, levels), *path]
    if level != 0:
        raise Unsupported(f"the upsamples end at level {level}, not at full resolution")
    stages.append(head_stage("head", 0, sequential(dec.head[:-1]), dec.head[-1]))
    return CausalProgram(
        stages=stages,
        levels=levels,
        in_level=levels,
        out_level=0,
        in_channels=dec.conv1.in_channels,
        call_args=forward_params(dec),
        time_factor=time_factor,
    )


def build_encoder(enc: nn.Module) -> CausalProgram:
    """Encoder as stages: ``conv1`` and the downsamples, then the middle and the head at latent size."""
    path, level, _ = path_stages(
        "downsamples", enc.downsamples, 0, lambda name, block, at: _stages(name, block, at, False)
    )
    stages = [conv_stage("conv1", 0, enc.conv1), *path, *_middle(enc.middle, level)]
    stages.append(head_stage("head", level, sequential(enc.head[:-1]), enc.head[-1]))
    return CausalProgram(
        stages=stages,
        levels=level,
        in_level=0,
        out_level=level,
        in_channels=enc.conv1.in_channels,
        call_args=forward_params(enc),
    )
