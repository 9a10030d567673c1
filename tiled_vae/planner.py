"""Tile plans: a uniform grid, or a content-adaptive quadtree.

A plan is a list of :class:`~.geometry.Rect` at full resolution (output pixels for a decoder,
input pixels for an encoder) that partitions the image: every pixel belongs to exactly one tile's
core. Interior edges sit on multiples of ``align`` (``2**levels`` of the VAE) so every level of the
pyramid is cut at whole pixels. The tiled VAE is exact under any plan; the plan only decides how
many tiles run and how large each one is (speed and peak memory).
"""

from __future__ import annotations

import math

import torch

from .geometry import Rect


def _cuts(size: int, align: int, max_len: int) -> list[int]:
    """Split ``[0, size)`` into near-equal pieces no longer than ``max_len``, cut on ``align``."""
    cells = math.ceil(size / align)
    max_cells = max(1, max_len // align)
    pieces = math.ceil(cells / max_cells)
    bounds = [round(i * cells / pieces) * align for i in range(pieces + 1)]
    bounds[-1] = size
    return bounds


def grid_plan(height: int, width: int, tile: int, align: int) -> list[Rect]:
    """Cover the image with near-equal tiles of at most ``tile`` x ``tile`` pixels."""
    _check(height, width, tile, align)
    ys, xs = _cuts(height, align, tile), _cuts(width, align, tile)
    return [Rect(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(len(ys) - 1) for j in range(len(xs) - 1)]


def detail_map(x: torch.Tensor, cell: int) -> torch.Tensor:
    """Per-cell detail of ``x`` (B, C, H, W): mean absolute gradient, channels normalised.

    Each channel is divided by its own standard deviation over the image (so latent channels with
    different scales count alike), then the mean absolute horizontal + vertical difference is
    averaged over batch and channels and pooled into ``cell`` x ``cell`` cells (ceil at the border).
    """
    x = x.detach().float()
    x = x / x.std(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
    gy = torch.zeros_like(x)
    gx = torch.zeros_like(x)
    gy[..., 1:, :] = (x[..., 1:, :] - x[..., :-1, :]).abs()
    gx[..., :, 1:] = (x[..., :, 1:] - x[..., :, :-1]).abs()
    g = (gy + gx).mean(dim=(0, 1), keepdim=True)
    return torch.nn.functional.avg_pool2d(g, cell, stride=cell, ceil_mode=True)[0, 0].cpu()


def quadtree_plan(
    height: int,
    width: int,
    tile: int,
    align: int,
    detail: torch.Tensor | None = None,
    min_tile: int | None = None,
    split_above: float = 1.5,
) -> list[Rect]:
    """Grid roots refined where the content is busy.

    The roots are the tiles of :func:`grid_plan` (the fewest near-equal tiles within ``tile``).
    A node splits into four aligned quadrants while its mean ``detail`` (from :func:`detail_map`,
    one value per ``align`` cell) exceeds ``split_above`` times the image mean and its halves would
    still be at least ``min_tile`` (default a quarter of ``tile``). Flat regions keep the largest
    tiles, busy ones get smaller tiles. Leaves partition the image exactly.
    """
    roots = grid_plan(height, width, tile, align)
    min_tile = max(align, min_tile if min_tile is not None else tile // 4)
    if detail is None or not detail.numel() or float(detail.mean()) <= 0:
        return roots
    threshold = split_above * float(detail.mean())
    leaves: list[Rect] = []

    def split(r: Rect) -> None:
        cells = detail[r.y0 // align : math.ceil(r.y1 / align), r.x0 // align : math.ceil(r.x1 / align)]
        ym, xm = _mid(r.y0, r.y1, align), _mid(r.x0, r.x1, align)
        if min(r.height, r.width) < 2 * min_tile or float(cells.mean()) <= threshold or (ym, xm) == (r.y1, r.x1):
            leaves.append(r)
            return
        for ya, yb in ((r.y0, ym), (ym, r.y1)):
            for xa, xb in ((r.x0, xm), (xm, r.x1)):
                if yb > ya and xb > xa:
                    split(Rect(ya, yb, xa, xb))

    for root in roots:
        split(root)
    return leaves


def _mid(a: int, b: int, align: int) -> int:
    """The aligned cut closest to the middle of ``[a, b)`` (``b`` when none lies inside)."""
    m = a + round((b - a) / 2 / align) * align
    return m if a < m < b else b


def _check(height: int, width: int, tile: int, align: int) -> None:
    if height < 1 or width < 1:
        raise ValueError(f"cannot plan tiles for an empty image of {height}x{width} pixels")
    if tile < align:
        raise ValueError(
            f"tile size {tile} px is smaller than the VAE's alignment of {align} px; "
            f"use a tile size of at least {align} px"
        )


def plan_for(
    planner: str, min_tile_size: int, x: torch.Tensor, full: tuple[int, int], tile: int, align: int, cell: int
) -> list[Rect]:
    """The tiles a run uses: ``planner`` is ``grid`` or ``quadtree``; the quadtree measures detail
    on ``x`` (the module's input, latent or pixels, ``(B, C, h, w)``) in ``cell`` x ``cell`` cells
    of ``x``, one cell per ``align`` full-resolution pixels."""
    if planner == "grid":
        return grid_plan(full[0], full[1], tile, align)
    return quadtree_plan(full[0], full[1], tile, align, detail_map(x, cell), min_tile_size or None)
