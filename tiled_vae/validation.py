"""Input checks and sizes shared by the 2D and video tilers."""

from __future__ import annotations

from typing import Protocol

import torch

from .families import Family


class Pyramid(Protocol):
    """What both program kinds (2D and causal) expose about where their input and output live."""

    levels: int
    in_level: int
    out_level: int
    in_channels: int

    @property
    def align(self) -> int: ...


_CHECKS = {
    2: {
        "layout": "batch, channels, height, width",
        "channel_hint": "4 channels: SD1.x/SDXL; 16: Flux/SD3",
        "pixels": "image is",
    },
    3: {
        "layout": "batch, channels, frames, height, width",
        "channel_hint": "16 latent channels: Wan 2.1 / Qwen-Image; 48: Wan 2.2",
        "pixels": "frames are",
    },
}


def checks_for(family: Family) -> dict[str, str]:
    """The wording :func:`check_input` uses for ``family``'s tensors (2D images or video)."""
    return _CHECKS[family.dims]


def full_size(program: Pyramid, x: torch.Tensor) -> tuple[int, int]:
    """Full-resolution size: a decoder's output, an encoder's input."""
    scale = 2 ** (program.in_level - program.out_level) if program.in_level > program.out_level else 1
    return x.shape[-2] * scale, x.shape[-1] * scale


def check_input(
    x: torch.Tensor, program: Pyramid, family: Family, *, layout: str, channel_hint: str, pixels: str
) -> None:
    """Reject input the VAE cannot take, before anything runs, saying what to do about it.

    ``layout`` names the expected axes (its length-in-words decides the rank), ``channel_hint``
    lists the latent channel counts of the family's VAEs, ``pixels`` names what is measured in px
    ("image is" / "frames are").
    """
    dims = len(layout.split(","))
    if x.ndim != dims:
        hint = ""
        if dims == 5 and x.ndim == 4:
            hint = "; a single image is one frame: (batch, channels, 1, height, width)"
        elif dims == 4 and x.ndim == 5:
            hint = "; a video latent needs a video VAE (Wan, Qwen-Image)"
        raise ValueError(
            f"this {family.label}'s {family.role} takes {dims}D tensors ({layout}), got shape {tuple(x.shape)}{hint}"
        )
    if x.shape[1] != program.in_channels:
        what = "latent" if family.role == "decoder" else ("image" if dims == 4 else "input")
        raise ValueError(
            f"the {what} has {x.shape[1]} channels but this {family.label}'s {family.role} takes "
            f"{program.in_channels}: connect the VAE that matches the model that made it ({channel_hint})"
        )
    if program.in_level == 0 and min(x.shape[-2:]) < program.align:
        raise ValueError(
            f"the {pixels} {x.shape[-1]}x{x.shape[-2]} px; this VAE needs at least {program.align} px on each side"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"the {family.role} input contains NaN or infinite values; check the node that made it")
