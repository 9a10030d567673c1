"""diffusers' 2D ``Encoder`` / ``Decoder`` (diffusers/models/autoencoders/vae.py), as in ``AutoencoderKL``.

Layout: ``conv_in``; ``down_blocks[i].resnets`` / ``.downsamplers`` (encoder) or
``up_blocks[i].resnets`` / ``.upsamplers`` (decoder, lowest resolution first); ``mid_block``;
``conv_norm_out`` (GroupNorm; the SpatialNorm variant is not supported); ``conv_act``; ``conv_out``.
"""

from __future__ import annotations

from torch import nn

from ..image.program import AttentionStep, Program, Step
from .common import Unsupported, conv_step, group_norm, has_conv2d_in, has_path, pointwise, resample_step, resnet_steps

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
    return _resnets_of(block.resnets, level, name)


def _resnets_of(resnets: list[nn.Module], level: int, name: str, first: int = 0) -> list[Step]:
    steps: list[Step] = []
    for j, r in enumerate(resnets, start=first):
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


def _attention(attn: nn.Module, level: int, name: str) -> AttentionStep:
    """``Attention`` as the VAE mid block builds it: group norm, self-attention, residual, rescale."""
    for flag, what in (("spatial_norm", "a spatial norm"), ("norm_q", "a query norm"), ("norm_k", "a key norm")):
        if getattr(attn, flag, None) is not None:
            raise Unsupported(f"{name} has {what}")
    if attn.is_cross_attention or not attn.residual_connection:
        raise Unsupported(f"{name} is not residual self-attention")
    c = attn.to_q.in_features
    if attn.group_norm is None or c % attn.heads:
        raise Unsupported(f"{name} has no group norm or splits {c} channels unevenly over {attn.heads} heads")
    if abs(attn.scale * (c // attn.heads) ** 0.5 - 1.0) > 1e-6:
        raise Unsupported(f"{name} scales attention by {attn.scale}, not 1/sqrt(head size)")
    dropout = attn.to_out[1]
    proj = pointwise(attn.to_out[0], c, f"{name}.to_out.0")
    return AttentionStep(
        name=name,
        level=level,
        norm=group_norm(attn.group_norm, f"{name}.group_norm"),
        q=pointwise(attn.to_q, c, f"{name}.to_q"),
        k=pointwise(attn.to_k, c, f"{name}.to_k"),
        v=pointwise(attn.to_v, c, f"{name}.to_v"),
        proj=lambda t: dropout(proj(t)),
        channels=c,
        heads=attn.heads,
        scale=attn.scale,
        out_scale=float(attn.rescale_output_factor),
    )


def _mid(mid: nn.Module, level: int) -> list[Step]:
    """``mid_block``: resnets with an attention (or none) between each pair, at the latent level."""
    steps: list[Step] = []
    for j, r in enumerate(mid.resnets):
        if j > 0 and mid.attentions[j - 1] is not None:
            steps.append(_attention(mid.attentions[j - 1], level, f"mid_block.attentions.{j - 1}"))
        steps += _resnets_of([r], level, "mid_block", j)
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
    """Decoder as steps: ``conv_in`` and ``mid_block`` at latent size, the up blocks, the output conv."""
    levels = sum(1 for b in dec.up_blocks if b.upsamplers)
    steps: list[Step] = [conv_step(levels, "conv_in", dec.conv_in), *_mid(dec.mid_block, levels)]
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
    """Encoder as steps: ``conv_in`` and the down blocks, then ``mid_block`` and the output conv at latent size."""
    levels = sum(1 for b in enc.down_blocks if b.downsamplers)
    steps: list[Step] = [conv_step(0, "conv_in", enc.conv_in)]
    level = 0
    for i, block in enumerate(enc.down_blocks):
        steps += _resnets(block, level, f"down_blocks.{i}")
        down = _resampler(block, f"down_blocks.{i}", up=False)
        if down is not None:
            steps.append(resample_step(level, f"down_blocks.{i}.downsamplers.0", down, down.conv, up=False))
            level += 1
    steps += _mid(enc.mid_block, levels)
    steps.append(conv_step(levels, "conv_norm_out+conv_out", enc.conv_out, enc.conv_norm_out, enc.conv_act))
    return Program(steps=steps, levels=levels, in_level=0, out_level=levels, in_channels=enc.conv_in.in_channels)
