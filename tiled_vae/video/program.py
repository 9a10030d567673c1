"""A causal video (3D) VAE encoder or decoder written as a list of stages the video tiler can run.

Wan 2.1, Wan 2.2 and Qwen-Image VAEs run frame chunk by frame chunk: the host calls the encoder or
decoder once per chunk with a ``feat_cache`` list, and every causal 3D convolution keeps the last
``CACHE_T`` frames of its input there for the next chunk. Family adapters
(``families/wan_*.py``) cut such a module into :class:`CausalStage` objects, in the order the
host's forward runs them, each calling the real submodules with the host's own cache protocol:

* a *global* stage runs on the whole frame at latent resolution (``conv1`` + the middle block with
  its attention in a decoder; the middle block + head in an encoder);
* a *tiled* stage is spatially local (residual blocks, resamplers, the output head): the tiler runs
  it window by window, each window reading its core plus ``reach`` pixels of context and a window
  of every cache entry the stage owns (``slots`` consecutive entries of ``feat_cache``).

The norms of these VAEs are per pixel (RMS over channels), so the only spatially global operation
is the middle block's attention, which runs untiled; everything else is exact with the reach.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..geometry import LEVEL_CHANGE, Geometry

CACHE_T = 2
"""Frames of its input each causal 3x3x3 convolution keeps for the next chunk (all Wan VAEs)."""

StageFn = Callable[[torch.Tensor, "list[Any] | None", "list[int]", bool], torch.Tensor]
"""``fn(x, feat_cache, feat_idx, first_chunk)``: run the stage's real submodules on ``x`` (B, C, T, H, W).

It reads and replaces ``feat_cache[feat_idx[0]:]`` entries and advances ``feat_idx[0]`` exactly as
the host's forward does at that point; ``feat_cache=None`` runs without a time cache.
"""


@dataclass
class CausalStage:
    """One stage of a :class:`CausalProgram`.

    ``level`` is the pyramid level of the input (0: full resolution), ``geometry`` how the stage
    maps space (``same``; ``up``: 2x nearest upsample inside; ``down``: zero pad right/bottom and a
    stride-2 convolution inside). ``reach_in`` is the context (pixels each side, input level) of the
    convolutions before the resampling, ``reach_out`` that of the resampling convolution (output
    level for ``up``, the half kernel of the stride-2 convolution for ``down``). ``slots`` is the
    number of ``feat_cache`` entries the stage reads and writes, ``time_factor`` how many output
    frames it makes per input frame (2 for a temporal upsampler). ``tiled`` is False for stages
    that must see the whole frame.

    Wan 2.2 residual groups (``x -> blocks(x) + shortcut(x)``) run as one stage per block: the
    first keeps its input (``keeps_input``), the last adds ``shortcut(kept input, first_chunk,
    cached)`` at its output core; the shortcut is a pixel shuffle (2x up or down), so it needs the
    kept input only under the core.
    """

    name: str
    fn: StageFn
    level: int
    geometry: Geometry = "same"
    reach_in: int = 0
    reach_out: int = 0
    slots: int = 0
    c_in: int = 0
    c_out: int = 0
    time_factor: int = 1
    tiled: bool = True
    keeps_input: bool = False
    shortcut: Callable[[torch.Tensor, bool, bool], torch.Tensor] | None = None

    @property
    def out_level(self) -> int:
        return self.level + LEVEL_CHANGE[self.geometry]


@dataclass(frozen=True)
class ClipShape:
    """How a whole decode or encode feeds the module: ``chunks`` (frame ranges of the module's
    input, one call each), the module's ``full`` size, and the output frames it makes."""

    chunks: list[tuple[int, int]]
    full: tuple[int, int]
    out_frames: int


@dataclass
class StageRun:
    """Consecutive stages run the same way: ``tiled`` (window by window, each tile with its own time
    cache) or not (the whole frame at once); ``first_slot`` is the ``feat_cache`` entry the first
    stage reads."""

    stages: list[CausalStage]
    tiled: bool
    first_slot: int

    @property
    def slots(self) -> int:
        """``feat_cache`` entries the run reads and writes."""
        return sum(s.slots for s in self.stages)


@dataclass
class CausalProgram:
    """The stages of one causal encoder or decoder, plus what the tiler needs to plan it.

    ``levels`` counts the 2x spatial resolution changes inside the module; the input lives at
    ``in_level`` and the output at ``out_level`` (a decoder reads at ``levels`` and writes at 0).
    ``call_args`` names the forward's parameters after ``x``, in order; ``time_factor`` is how many
    frames the widest stage holds per input frame (temporal upsampling in a decoder).

    The stages split into runs (:meth:`runs`): the middle attention, which must see the whole
    frame, and the spatially local stages before and after it, which run tile by tile.
    """

    stages: list[CausalStage]
    levels: int
    in_level: int
    out_level: int
    in_channels: int
    call_args: tuple[str, ...] = ("feat_cache", "feat_idx")
    time_factor: int = 1

    @property
    def align(self) -> int:
        """Full-resolution pixels per pixel of the lowest level: interior tile edges sit on it."""
        return 2**self.levels

    def runs(self) -> list[StageRun]:
        """The stages cut into runs: each global stage (the middle attention) alone, and the runs of
        tiled stages between them, in order.

        A tiled run that goes down to the latent level ends where the downsampling ends: its last
        stages at the latent level run as a tiled run of their own. A tile's context at full
        resolution is the reach of everything after it scaled up to there, so latent-level stages
        in the same run would widen it by their reach times the full scale (in Wan's encoder from
        about 40 to 90 px, recomputing half of every 512 px tile); split off, they cost one
        latent-size intermediate.
        """
        runs: list[StageRun] = []
        for i, stage in enumerate(self.stages):
            if runs and runs[-1].tiled and stage.tiled and not self._starts_latent_tail(i):
                runs[-1].stages.append(stage)
            else:
                runs.append(StageRun([stage], stage.tiled, self.slots_before(i)))
        return runs

    def _starts_latent_tail(self, index: int) -> bool:
        """True when stage ``index`` is the first of the latent-level stages that end a downsampling run."""
        latent = self.out_level
        if self.in_level >= latent or index == 0:
            return False
        stage, before = self.stages[index], self.stages[index - 1]
        return (
            stage.tiled
            and stage.level == latent
            and before.out_level == latent
            and before.geometry == "down"
            and stage.geometry == "same"
            and not stage.keeps_input
        )

    def slots_before(self, index: int) -> int:
        """``feat_cache`` entries the stages before ``index`` use: where stage ``index`` starts reading."""
        return sum(s.slots for s in self.stages[:index])


def cached_conv(
    conv: torch.nn.Module, x: torch.Tensor, feat_cache: list[Any] | None, feat_idx: list[int]
) -> torch.Tensor:
    """Run a causal 3D convolution with the Wan time cache, as the hosts do for their first and last conv.

    The entry ``feat_cache[feat_idx[0]]`` holds the previous chunk's last frames (or None at the
    start); the convolution prepends them instead of zero padding, and the entry is replaced by
    this chunk's last ``CACHE_T`` frames (topped up with the previous chunk's last frame when this
    chunk has only one).
    """
    if feat_cache is None:
        return conv(x)
    i = feat_idx[0]
    previous = feat_cache[i]
    keep = x[:, :, -CACHE_T:].clone()
    if keep.shape[2] < CACHE_T and previous is not None:
        keep = torch.cat([previous[:, :, -1:].to(keep.device), keep], dim=2)
    y = conv(x, previous)
    feat_cache[i] = keep
    feat_idx[0] = i + 1
    return y
