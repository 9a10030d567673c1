"""Draw a tile plan over an image, so users can see how their image will be cut."""

from __future__ import annotations

import torch

from .geometry import Rect

_PALETTE = torch.tensor(
    [[0.95, 0.26, 0.21], [0.13, 0.59, 0.95], [0.30, 0.69, 0.31], [1.0, 0.76, 0.03], [0.61, 0.15, 0.69]]
)


def draw_plan(image: torch.Tensor, plan: list[Rect], full: tuple[int, int], tint: float = 0.25) -> torch.Tensor:
    """Return ``image`` (B, H, W, C in [0, 1]) with each tile tinted and outlined.

    ``plan`` is in the ``full`` resolution; it is scaled to the image when the sizes differ (an
    image that was cropped to the VAE's multiple, a preview of a latent's decode). Neighbouring
    tiles get different colours; outlines are 1-2 px dark lines.
    """
    out = image[..., :3].clone().float()
    h, w = out.shape[1:3]
    sy, sx = h / full[0], w / full[1]
    line = max(1, round(min(h, w) / 512))
    for i, r in enumerate(plan):
        y0, y1 = round(r.y0 * sy), max(round(r.y0 * sy) + 1, round(r.y1 * sy))
        x0, x1 = round(r.x0 * sx), max(round(r.x0 * sx) + 1, round(r.x1 * sx))
        colour = _PALETTE[i % len(_PALETTE)].to(out.device)
        region = out[:, y0:y1, x0:x1]
        region.mul_(1 - tint).add_(colour * tint)
        for edge in (region[:, :line], region[:, -line:], region[:, :, :line], region[:, :, -line:]):
            edge.mul_(0.2)
    return out.clamp(0, 1)
