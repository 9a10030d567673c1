"""GroupNorm with statistics pooled over tiles, so a tiled network normalises like the whole image."""

from __future__ import annotations

import torch


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
        n = (c // self.num_groups) * x.shape[-2] * x.shape[-1]
        if n == 0:
            return
        g = x.reshape(b, self.num_groups, -1).float()
        var, mean = torch.var_mean(g, dim=-1, correction=0)
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
    x: torch.Tensor, norm: torch.nn.GroupNorm, mean: torch.Tensor, rstd: torch.Tensor
) -> torch.Tensor:
    """Apply ``norm`` (its groups, weight and bias) to ``x`` using given (B, G) statistics.

    The statistics and the affine parameters fold into one fp32 scale and shift per (sample,
    channel), applied in a single fused multiply-add in fp32 and returned in ``x``'s dtype, as the
    untiled GroupNorm kernels compute. The affine parameters are read from the module and moved to
    ``x``'s device, which also covers weights that live elsewhere until cast (ComfyUI's low-VRAM mode).
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
    return torch.addcmul(shift.view(view), x, scale.view(view)).to(x.dtype)
