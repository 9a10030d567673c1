"""Structural checks and step builders shared by the 2D family adapters."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..image.program import WindowStep


class Unsupported(Exception):
    """The module matches a family's layout but has a variant the tiler cannot run exactly."""


def has_path(module: nn.Module, path: str) -> bool:
    """True when the dotted attribute ``path`` exists below ``module``."""
    obj: object = module
    for part in path.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def has_conv2d_in(module: nn.Module) -> bool:
    """True when ``module.conv_in`` is a 2D convolution (video VAEs use 3D ones there)."""
    return isinstance(getattr(module, "conv_in", None), nn.Conv2d)


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def same_reach(conv: nn.Module, where: str) -> int:
    """Context pixels each side of a stride-1, zero-'same'-padded 2D convolution."""
    if not isinstance(conv, nn.Conv2d):
        raise Unsupported(f"{where} is {type(conv).__name__}, not a 2D convolution")
    k, s, p, d = _pair(conv.kernel_size), _pair(conv.stride), conv.padding, _pair(conv.dilation)
    if isinstance(p, str) or s != (1, 1) or d != (1, 1) or k[0] != k[1] or k[0] % 2 == 0:
        raise Unsupported(f"{where} is not a stride-1 odd square convolution")
    if _pair(p) != (k[0] // 2, k[0] // 2) or conv.padding_mode != "zeros":
        raise Unsupported(f"{where} does not use zero 'same' padding")
    return k[0] // 2


def down_reach(conv: nn.Module, where: str) -> int:
    """Half-kernel of the stride-2 unpadded convolution of a pad-right/bottom downsampler."""
    if not isinstance(conv, nn.Conv2d):
        raise Unsupported(f"{where} is {type(conv).__name__}, not a 2D convolution")
    k = _pair(conv.kernel_size)
    if _pair(conv.stride) != (2, 2) or _pair(conv.padding) != (0, 0) or k != (3, 3):
        raise Unsupported(f"{where} is not a 3x3 stride-2 unpadded convolution")
    return 1


def pointwise(layer: nn.Module, channels: int, where: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``channels -> channels`` 1x1 convolution or linear layer as a map of ``(B, C, h, w)`` tensors.

    The layer module itself is called (a linear one on channels-last pixels, as the untiled
    attention calls it on tokens), so host-side weight casting in its forward still applies.
    """
    if isinstance(layer, nn.Conv2d):
        if _pair(layer.kernel_size) != (1, 1) or _pair(layer.stride) != (1, 1) or _pair(layer.padding) != (0, 0):
            raise Unsupported(f"{where} is not a 1x1 convolution")
        if layer.groups != 1 or (layer.in_channels, layer.out_channels) != (channels, channels):
            raise Unsupported(f"{where} does not map {channels} channels to {channels}")
        return layer
    if isinstance(layer, nn.Linear):
        if (layer.in_features, layer.out_features) != (channels, channels):
            raise Unsupported(f"{where} does not map {channels} channels to {channels}")
        return lambda t: layer(t.movedim(1, -1)).movedim(-1, 1)
    raise Unsupported(f"{where} is {type(layer).__name__}, not a 1x1 convolution or linear layer")


def group_norm(norm: nn.Module, where: str) -> nn.GroupNorm:
    """The module itself, checked to be a GroupNorm the engine can apply with pooled statistics."""
    if not isinstance(norm, nn.GroupNorm):
        raise Unsupported(f"{where} is {type(norm).__name__}, not GroupNorm")
    return norm


def resnet_steps(
    level: int,
    name: str,
    norm1: nn.Module,
    conv1: nn.Module,
    norm2: nn.Module,
    conv2: nn.Module,
    act: Callable[[torch.Tensor], torch.Tensor],
    dropout: Callable[[torch.Tensor], torch.Tensor],
    shortcut: nn.Module | None,
    out_scale: float = 1.0,
) -> list[WindowStep]:
    """A GroupNorm resnet block as two window steps: ``h = conv1(act(norm1(x)))`` then
    ``x = (shortcut(x) + conv2(dropout(act(norm2(h))))) / out_scale``."""
    first = WindowStep(
        name=f"{name}.conv1",
        level=level,
        module=conv1,
        geometry="same",
        reach=same_reach(conv1, f"{name}.conv1"),
        c_in=conv1.in_channels,
        c_out=conv1.out_channels,
        norm=group_norm(norm1, f"{name}.norm1"),
        pre=(act,),
        src="x",
        dst="h",
    )
    second = WindowStep(
        name=f"{name}.conv2",
        level=level,
        module=conv2,
        geometry="same",
        reach=same_reach(conv2, f"{name}.conv2"),
        c_in=conv2.in_channels,
        c_out=conv2.out_channels,
        norm=group_norm(norm2, f"{name}.norm2"),
        pre=(act, dropout),
        residual="x",
        c_residual=conv1.in_channels,
        shortcut=shortcut,
        shortcut_reach=same_reach(shortcut, f"{name} shortcut") if shortcut is not None else 0,
        out_scale=out_scale,
        src="h",
        dst="x",
    )
    return [first, second]


def conv_step(
    level: int,
    name: str,
    conv: nn.Module,
    norm: nn.Module | None = None,
    act: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> WindowStep:
    """``x = conv([act(norm(x))])`` as one window step (an input or output convolution)."""
    return WindowStep(
        name=name,
        level=level,
        module=conv,
        geometry="same",
        reach=same_reach(conv, name),
        c_in=conv.in_channels,
        c_out=conv.out_channels,
        norm=group_norm(norm, f"{name} norm") if norm is not None else None,
        pre=(act,) if act is not None else (),
    )


def resample_step(level: int, name: str, module: nn.Module, conv: nn.Module, up: bool) -> WindowStep:
    """A 2x nearest upsample + conv, or a pad-right/bottom stride-2 conv, as one window step."""
    return WindowStep(
        name=name,
        level=level,
        module=module,
        geometry="up" if up else "down",
        reach=same_reach(conv, f"{name}.conv") if up else down_reach(conv, f"{name}.conv"),
        c_in=conv.in_channels,
        c_out=conv.out_channels,
    )


def silu(x: torch.Tensor) -> torch.Tensor:
    """The swish nonlinearity every supported 2D VAE uses between norm and conv."""
    return torch.nn.functional.silu(x)
