"""A VAE encoder/decoder written as a flat list of steps the tile engine can run.

Family adapters (``families/``) translate a module tree into a :class:`Program`. Steps read and
write named full-size activations ("registers"): a :class:`WindowStep` runs tile by tile, each
tile reading its core plus the few pixels of context its convolution needs from the stored input;
an :class:`AttentionStep` (the mid-block self-attention, at latent size) keeps every key and value
on the compute device and runs its queries band by band. Every GroupNorm sits at the start of a
step and uses statistics pooled over the whole input, so the tiled result equals the untiled one,
and nothing holds a full-size activation on the compute device except the attention's keys and values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..geometry import LEVEL_CHANGE, Geometry


@dataclass
class WindowStep:
    """``dst = [residual +] module(pre(norm(src)))`` computed tile by tile at pyramid ``level``.

    ``geometry`` says how ``module`` maps space: ``same`` (stride-1 conv with same padding and
    ``reach`` pixels of context each side), ``up`` (2x nearest upsample then a conv of ``reach``
    at the output resolution) or ``down`` (zero pad right/bottom by one, then a stride-2 conv with
    kernel ``2 * reach + 1``). ``residual`` names a register added at the tile's core after
    ``shortcut`` (a conv of ``shortcut_reach``; ``c_residual`` is that register's channel count); the
    sum is divided by ``out_scale``. ``pre`` holds
    elementwise functions only (activation, dropout): they run slice by slice with the norm.
    """

    name: str
    level: int
    module: Callable[[torch.Tensor], torch.Tensor]
    geometry: Geometry
    reach: int
    c_in: int
    c_out: int
    norm: torch.nn.GroupNorm | None = None
    pre: Sequence[Callable[[torch.Tensor], torch.Tensor]] = ()
    residual: str | None = None
    shortcut: Callable[[torch.Tensor], torch.Tensor] | None = None
    shortcut_reach: int = 0
    c_residual: int = 0
    out_scale: float = 1.0
    src: str = "x"
    dst: str = "x"

    @property
    def out_level(self) -> int:
        return self.level + LEVEL_CHANGE[self.geometry]

    @property
    def fine_level(self) -> int:
        """The higher-resolution of the step's input and output levels (where its tiles are largest)."""
        return min(self.level, self.out_level)


PixelMap = Callable[[torch.Tensor], torch.Tensor]
"""A per-pixel projection (1x1 convolution or linear layer) of a ``(B, C, h, w)`` map."""


@dataclass
class AttentionStep:
    """``dst = (src + proj(attention(q(n), k(n), v(n)))) / out_scale`` with ``n = norm(src)``, at ``level``.

    Single-image self-attention over every pixel of the level, split into ``heads`` heads of
    ``channels // heads`` channels, softmax scale ``scale``: the VAE mid-block attention.
    """

    name: str
    level: int
    norm: torch.nn.GroupNorm
    q: PixelMap
    k: PixelMap
    v: PixelMap
    proj: PixelMap
    channels: int
    heads: int
    scale: float
    out_scale: float = 1.0
    src: str = "x"
    dst: str = "x"


Step = WindowStep | AttentionStep


@dataclass
class Program:
    """Steps plus the pyramid they run on.

    ``levels`` is the number of 2x resolution changes (3 for an 8x VAE); ``in_level`` and
    ``out_level`` are where the input and output live (a decoder reads at ``levels`` and writes at
    0, an encoder the reverse). ``in_channels`` is what the first layer accepts.
    """

    steps: list[Step]
    levels: int
    in_level: int
    out_level: int
    in_channels: int
    post: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def align(self) -> int:
        """Full-resolution pixels per pixel of the lowest level: interior tile edges sit on it."""
        return 2**self.levels

    def window_steps(self) -> list[WindowStep]:
        return [s for s in self.steps if isinstance(s, WindowStep)]

    def attention_steps(self) -> list[AttentionStep]:
        return [s for s in self.steps if isinstance(s, AttentionStep)]
