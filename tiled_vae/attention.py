"""Keys and values of a whole-image self-attention, gathered band by band (2D and video tilers)."""

from __future__ import annotations

from collections.abc import Callable

import torch

KeyValue = Callable[[int, int], "tuple[torch.Tensor, torch.Tensor]"]
"""``project(y0, y1)``: keys and values of rows ``y0:y1``, each ``(B, heads, (y1 - y0) * width, d)``."""


def keys_and_values(
    bands: list[tuple[int, int]], width: int, project: KeyValue, after_band: Callable[[], None] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of every pixel in row-major token order, computed one row band at a time.

    ``bands`` cover the rows in order. Only one band's normalised input and projections exist at
    once beside the two results, which is what lets a mid-block attention run exactly over the
    whole image without its untiled peak. ``after_band`` runs after each band (progress, interrupt).
    """
    tokens = bands[-1][1] * width
    keys = values = None
    for y0, y1 in bands:
        k, v = project(y0, y1)
        if keys is None:
            keys = k.new_empty((*k.shape[:2], tokens, k.shape[-1]))
            values = v.new_empty((*v.shape[:2], tokens, v.shape[-1]))
        keys[:, :, y0 * width : y1 * width] = k
        values[:, :, y0 * width : y1 * width] = v
        del k, v
        if after_band is not None:
            after_band()
    return keys, values
