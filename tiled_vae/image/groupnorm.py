"""GroupNorm with statistics pooled over tiles, so a tiled network normalises like the whole image."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

CHUNKS = 8
"""Float32 work on a tile is done in this many channel slices, so its transient copies stay an
eighth of the tile (a bf16 tile would otherwise get a float32 twin twice its size)."""


class GroupStats:
    """Running per-(sample, group) mean and sum of squared deviations, merged tile by tile.

    Each tile contributes the fp32 mean and M2 of its *core* pixels (never its halo, which belongs
    to a neighbour); tiles are merged with the parallel-variance formula (Chan et al.), which keeps
    the between-tile term, so the pooled variance equals the variance over the whole image up to
    float rounding, without the cancellation of a plain sum-of-squares.
    """

    def __init__(self, num_groups: int) -> None:
        self.num_groups = num_groups
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        """Add a tile's core ``x`` of shape (B, C, h, w)."""
        b, c = x.shape[:2]
        per_group = c // self.num_groups
        n = per_group * x.shape[-2] * x.shape[-1]
        if n == 0:
            return
        parts = []
        step = max(1, self.num_groups // CHUNKS)
        for g0 in range(0, self.num_groups, step):
            g1 = min(self.num_groups, g0 + step)
            part = x[:, g0 * per_group : g1 * per_group].reshape(b, g1 - g0, -1).float()
            parts.append(torch.var_mean(part, dim=-1, correction=0))
            del part
        var, mean = torch.cat([v for v, _ in parts], dim=1), torch.cat([m for _, m in parts], dim=1)
        m2 = var * n
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * n / total)
        self.count = total

    def mean_rstd(self, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled mean and 1/sqrt(var + eps), each (B, G) in fp32; raises if they are not finite."""
        if self.mean is None:
            raise RuntimeError("group statistics requested before any tile was added")
        var = self.m2 / self.count
        if not (torch.isfinite(self.mean).all() and torch.isfinite(var).all()):
            raise FloatingPointError(
                "GroupNorm statistics are not finite: an activation overflowed (typical of fp16 VAEs "
                "on large images) or the input holds NaN/inf. Run the VAE in bf16 or fp32 "
                "(ComfyUI: --bf16-vae or --fp32-vae)."
            )
        return self.mean, torch.rsqrt(var + eps)


def group_norm_with_stats(
    x: torch.Tensor,
    norm: torch.nn.GroupNorm,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    then: Sequence[Callable[[torch.Tensor], torch.Tensor]] = (),
) -> torch.Tensor:
    """Apply ``norm`` (its groups, weight and bias) to ``x`` using given (B, G) statistics, then ``then``.

    The statistics and the affine parameters fold into one fp32 scale and shift per (sample,
    channel), applied in a single fused multiply-add in fp32 and rounded once to ``x``'s dtype, as
    the untiled GroupNorm kernels compute. The affine parameters are read from the module and moved
    to ``x``'s device, which also covers weights that live elsewhere until cast (ComfyUI's low-VRAM
    mode). ``then`` holds elementwise functions (the activation after the norm); the work runs in
    :data:`CHUNKS` channel slices written into one output, so it needs an eighth of ``x`` in
    temporaries, not a float32 copy of it. The output has ``x``'s memory layout when ``x`` is dense
    (channels-last stays channels-last), else the standard one.
    """
    b, c = x.shape[:2]
    per_group = c // norm.num_groups
    scale = rstd.repeat_interleave(per_group, dim=1)  # (B, C)
    shift = -mean.repeat_interleave(per_group, dim=1) * scale
    if norm.weight is not None:
        w = norm.weight.to(x.device, torch.float32)
        scale, shift = scale * w, shift * w
    if norm.bias is not None:
        shift = shift + norm.bias.to(x.device, torch.float32)
    view = (b, c) + (1,) * (x.ndim - 2)
    scale, shift = scale.view(view), shift.view(view)
    out = None
    step = max(1, c // CHUNKS)
    for c0 in range(0, c, step):
        part = torch.addcmul(shift[:, c0 : c0 + step], x[:, c0 : c0 + step], scale[:, c0 : c0 + step]).to(x.dtype)
        for fn in then:
            part = fn(part)
        if out is None:
            out = torch.empty_like(x, dtype=part.dtype)
        out[:, c0 : c0 + step] = part
        del part
    return out
