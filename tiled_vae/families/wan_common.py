"""Structural checks shared by the causal (Wan / Qwen-Image) 3D VAE adapters.

Everything here reads module attributes only: what a convolution reaches spatially, which
resampling a block does, how many time-cache entries it uses. Nothing depends on class names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..attention import keys_and_values
from ..geometry import Geometry
from ..video.program import CausalStage, StageFn, cached_conv
from .common import Unsupported


def is_causal_conv(module: object) -> bool:
    """A Wan-style causal 3D convolution: an ``nn.Conv3d`` that pads itself through ``_padding``."""
    return isinstance(module, nn.Conv3d) and len(getattr(module, "_padding", ())) == 6


def forward_params(module: nn.Module) -> tuple[str, ...]:
    """Names of ``module.forward``'s parameters after the input tensor, in order."""
    params = list(inspect.signature(type(module).forward).parameters)
    return tuple(params[2:])


def _hw(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[-2]), int(v[-1]))


def conv_radius(conv: nn.Module, where: str) -> int:
    """Context pixels each side of a stride-1, zero 'same'-padded 2D or causal 3D convolution."""
    if not isinstance(conv, (nn.Conv2d, nn.Conv3d)):
        raise Unsupported(f"{where} is {type(conv).__name__}, not a convolution")
    kh, kw = _hw(conv.kernel_size)
    if _hw(conv.stride) != (1, 1) or _hw(conv.dilation) != (1, 1) or kh != kw or kh % 2 == 0:
        raise Unsupported(f"{where} is not a spatially stride-1 odd square convolution")
    if is_causal_conv(conv):
        pad = conv._padding
        if tuple(pad[:4]) != (kw // 2, kw // 2, kh // 2, kh // 2) or tuple(conv.padding) != (0, 0, 0):
            raise Unsupported(f"{where} does not pad 'same' in space")
    elif isinstance(conv.padding, str) or _hw(conv.padding) != (kh // 2, kw // 2) or conv.padding_mode != "zeros":
        raise Unsupported(f"{where} does not use zero 'same' padding")
    return kh // 2


def uses_cache(conv: nn.Module) -> bool:
    """A causal convolution with a temporal kernel takes one ``feat_cache`` entry per call."""
    return is_causal_conv(conv) and conv.kernel_size[0] > 1


def _resample(module: nn.Module, where: str) -> tuple[Geometry, int, int]:
    """(geometry, reach of its spatial convolution, time factor) of a Wan ``Resample`` block."""
    mode = module.mode
    if mode == "none":
        return "same", 0, 1
    seq = module.resample
    if mode in ("upsample2d", "upsample3d"):
        up, conv = seq[0], seq[1]
        if not isinstance(up, nn.Upsample) or up.mode not in ("nearest", "nearest-exact"):
            raise Unsupported(f"{where} does not upsample by nearest neighbour")
        if tuple(float(s) for s in _hw(up.scale_factor)) != (2.0, 2.0):
            raise Unsupported(f"{where} does not upsample by 2")
        return "up", conv_radius(conv, f"{where}.resample.1"), 2 if mode == "upsample3d" else 1
    if mode in ("downsample2d", "downsample3d"):
        pad, conv = seq[0], seq[1]
        if not isinstance(pad, nn.ZeroPad2d) or tuple(pad.padding) != (0, 1, 0, 1):
            raise Unsupported(f"{where} does not pad right/bottom by one before downsampling")
        if (
            not isinstance(conv, nn.Conv2d)
            or _hw(conv.kernel_size) != (3, 3)
            or _hw(conv.stride) != (2, 2)
            or _hw(conv.padding) != (0, 0)
        ):
            raise Unsupported(f"{where} is not a 3x3 stride-2 unpadded convolution")
        return "down", 1, 1
    raise Unsupported(f"{where} has resample mode {mode!r}")


def _is_resample(module: nn.Module) -> bool:
    return hasattr(module, "mode") and hasattr(module, "resample")


def _is_attention(module: nn.Module) -> bool:
    return hasattr(module, "to_qkv")


def stage_shape(module: nn.Module, where: str) -> tuple[Geometry, int, int, int, int]:
    """(geometry, reach_in, reach_out, slots, time factor) of a spatially local block.

    Walks every submodule: a ``Resample`` gives the geometry and the reach after resampling; every
    other spatial convolution adds its radius to ``reach_in`` (a sum over the block: exact for a
    chain, an upper bound where branches run side by side, such as a 1x1 shortcut). Attention at a
    tiled resolution or an unknown convolution makes the block unsupported.
    """
    geometry: Geometry = "same"
    reach_in = reach_out = slots = 0
    time_factor = 1
    inside_resample: set[int] = set()
    for name, m in module.named_modules():
        label = f"{where}.{name}" if name else where
        if _is_attention(m):
            raise Unsupported(f"{label} is attention at a tiled resolution")
        if _is_resample(m):
            if geometry != "same":
                raise Unsupported(f"{where} resamples twice")
            geometry, reach_out, time_factor = _resample(m, label)
            inside_resample.update(id(c) for c in m.resample.modules())
        if uses_cache(m):
            slots += 1
        spatial = isinstance(m, (nn.Conv2d, nn.Conv3d)) and _hw(m.kernel_size) != (1, 1)
        if spatial and id(m) not in inside_resample:
            reach_in += conv_radius(m, label)
    return geometry, reach_in, reach_out, slots, time_factor


def out_channels(module: nn.Module) -> int:
    """Channels the block outputs: those of its last convolution (the resample's when it has one)."""
    convs = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    if not convs:
        raise Unsupported(f"{type(module).__name__} has no convolution")
    last = convs[-1]
    for m in module.modules():
        if _is_resample(m) and m.mode != "none":
            last = m.resample[1]
    return last.out_channels


def in_channels(module: nn.Module) -> int:
    """Channels the block reads: those of its first convolution."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            return m.in_channels
    raise Unsupported(f"{type(module).__name__} has no convolution")


def block_stage(name: str, block: nn.Module, level: int, call: StageFn) -> tuple[CausalStage, int]:
    """A tiled stage for one spatially local block, and its time factor."""
    geometry, reach_in, reach_out, slots, time_factor = stage_shape(block, name)
    stage = CausalStage(
        name=name,
        fn=call,
        level=level,
        geometry=geometry,
        reach_in=reach_in,
        reach_out=reach_out,
        slots=slots,
        c_in=in_channels(block),
        c_out=out_channels(block),
        time_factor=time_factor,
    )
    return stage, time_factor


def head_stage(name: str, level: int, pre: Callable[[torch.Tensor], torch.Tensor], conv: nn.Module) -> CausalStage:
    """The per-pixel norm + activation and the last causal convolution, as one tiled stage."""
    if not is_causal_conv(conv):
        raise Unsupported(f"{name} does not end in a causal 3D convolution")

    def run(x: torch.Tensor, cache: list[Any] | None, idx: list[int], first_chunk: bool) -> torch.Tensor:
        return cached_conv(conv, pre(x), cache, idx)

    return CausalStage(
        name=name,
        fn=run,
        level=level,
        reach_in=conv_radius(conv, name),
        slots=1 if uses_cache(conv) else 0,
        c_in=conv.in_channels,
        c_out=conv.out_channels,
    )


def conv_stage(name: str, level: int, conv: nn.Module) -> CausalStage:
    """A bare causal convolution (an encoder's first, a decoder's ``conv1``) as a tiled stage."""
    return head_stage(name, level, lambda x: x, conv)


BAND_TOKENS = 16384
"""Query pixels per band of the middle attention: keys and values of the whole frame stay on the
device, the queries run in bands of about this many pixels (a few MiB each)."""


def attention_stage(name: str, attn: nn.Module, level: int) -> CausalStage:
    """The middle block's per-frame self-attention (``norm``, ``to_qkv``, one head, ``proj``, residual)
    as a whole-frame stage that holds keys and values for every pixel and runs queries in bands.

    Untiled, it would hold the normalised frame, queries, keys, values, their contiguous copies and
    the output at once; banded, the device holds keys and values plus one band. Exact up to float
    rounding: the same per-pixel layers and the same fused attention over every key. ``to_qkv`` is
    one layer, called as a module (ComfyUI casts its weights in ``forward``), so each band runs it
    twice, once for keys and values and once for queries, rather than keep every query too: a 1x1
    convolution at latent size, small beside the attention.
    """
    norm, qkv, proj = (getattr(attn, n, None) for n in ("norm", "to_qkv", "proj"))
    if norm is None or not isinstance(qkv, nn.Conv2d) or not isinstance(proj, nn.Conv2d):
        raise Unsupported(f"{name} is not a norm / to_qkv / proj attention block")
    c = proj.in_channels
    for conv, c_out, what in ((qkv, 3 * c, "to_qkv"), (proj, c, "proj")):
        if _hw(conv.kernel_size) != (1, 1) or (conv.in_channels, conv.out_channels) != (c, c_out) or conv.groups != 1:
            raise Unsupported(f"{name}.{what} is not a 1x1 convolution from {c} to {c_out} channels")

    def run(x: torch.Tensor, cache: list[Any] | None, idx: list[int], first_chunk: bool) -> torch.Tensor:
        b, _, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        rows = max(1, BAND_TOKENS // w)
        bands = [(y, min(h, y + rows)) for y in range(0, h, rows)]

        def qkv_of(y0: int, y1: int) -> torch.Tensor:  # (frames, 3, pixels, c)
            return qkv(norm(frames[..., y0:y1, :])).reshape(b * t, 3, c, -1).transpose(-1, -2)

        def project(y0: int, y1: int) -> tuple[torch.Tensor, torch.Tensor]:
            part = qkv_of(y0, y1)
            return part[:, 1:2], part[:, 2:3]

        keys, values = keys_and_values(bands, w, project)
        out = torch.empty_like(x)
        for y0, y1 in bands:
            q = qkv_of(y0, y1)[:, :1].contiguous()  # fused (flash, memory-efficient) kernels need it
            o = torch.nn.functional.scaled_dot_product_attention(q, keys, values)
            del q
            y = proj(o[:, 0].transpose(-1, -2).reshape(b * t, c, y1 - y0, w))
            out[..., y0:y1, :] = x[..., y0:y1, :] + y.reshape(b, t, c, y1 - y0, w).transpose(1, 2)
        return out

    return CausalStage(name=name, fn=run, level=level, c_in=c, c_out=c, tiled=False)


StagesOf = Callable[[str, nn.Module, int], "tuple[list[CausalStage], int]"]
"""``stages_of(name, block, level)``: a path block's stages starting at ``level``, and its time factor."""


def path_stages(
    prefix: str, blocks: Iterable[nn.Module], level: int, stages_of: StagesOf
) -> tuple[list[CausalStage], int, int]:
    """The stages of an up or down path in order, each block starting at the level the previous one
    ended: (stages, the level the path ends at, its time factor)."""
    stages: list[CausalStage] = []
    time_factor = 1
    for i, block in enumerate(blocks):
        new, factor = stages_of(f"{prefix}.{i}", block, level)
        stages += new
        level, time_factor = new[-1].out_level, time_factor * factor
    return stages, level, time_factor


def middle_stages(prefix: str, layers: Iterable[tuple[str, nn.Module, StageFn]], level: int) -> list[CausalStage]:
    """The middle block at the latent level: each residual block a tiled stage, the attention banded."""
    stages = []
    for name, layer, call in layers:
        if _is_attention(layer):
            stages.append(attention_stage(f"{prefix}.{name}", layer, level))
        else:
            stages.append(block_stage(f"{prefix}.{name}", layer, level, call)[0])
    if not any(not s.tiled for s in stages):
        raise Unsupported(f"{prefix} has no attention layer where one is expected")
    return stages


def sequential(modules: Iterable[nn.Module]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Apply cache-free per-pixel modules (norm, activation) in order."""
    mods = list(modules)

    def run(x: torch.Tensor) -> torch.Tensor:
        for m in mods:
            x = m(x)
        return x

    return run


def group_stages(
    name: str,
    level: int,
    parts: list[tuple[str, nn.Module, StageFn]],
    shortcut: nn.Module | None,
    first_chunk_needs_cache: bool = False,
) -> tuple[list[CausalStage], int]:
    """A Wan 2.2 residual group (blocks in sequence plus a pixel-shuffle ``shortcut`` around them)
    as one stage per block, the shortcut added by the last; and the group's time factor.

    ``first_chunk_needs_cache``: the host passes ``first_chunk`` to the group only with a cache
    (ComfyUI); otherwise it always does (diffusers).
    """
    stages: list[CausalStage] = []
    time_factor = 1
    for part_name, block, call in parts:
        stage, factor = block_stage(part_name, block, level, call)
        stages.append(stage)
        level, time_factor = stage.out_level, time_factor * factor
    if not stages:
        raise Unsupported(f"{name} has no blocks")
    if shortcut is not None:
        if any(isinstance(m, (nn.Conv2d, nn.Conv3d)) for m in shortcut.modules()):
            raise Unsupported(f"{name}.avg_shortcut convolves; only pixel shuffles are supported")
        scale = getattr(shortcut, "factor_s", None)
        if scale != (1 if level == stages[0].level else 2):
            raise Unsupported(f"{name}.avg_shortcut scales space by {scale}, the blocks by another factor")
        takes_first = "first_chunk" in forward_params(shortcut)

        def add(x: torch.Tensor, first_chunk: bool, cached: bool) -> torch.Tensor:
            if not takes_first:
                return shortcut(x)
            return shortcut(x, first_chunk=first_chunk and (cached or not first_chunk_needs_cache))

        stages[0].keeps_input = True
        stages[-1].shortcut = add
    return stages, time_factor
