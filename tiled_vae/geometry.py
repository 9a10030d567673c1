"""Tile rectangles and how they map between the resolution levels of a VAE."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Geometry = Literal["same", "up", "down"]
"""How a layer maps space: stride 1, a 2x upsample inside, or a stride-2 downsample inside."""

LEVEL_CHANGE = {"same": 0, "up": -1, "down": 1}
"""Pyramid level change of each geometry (level 0 is full resolution)."""


@dataclass(frozen=True)
class Rect:
    """A half-open pixel rectangle ``[y0, y1) x [x0, x1)``."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def area(self) -> int:
        return self.height * self.width

    def slices(self) -> tuple[slice, slice]:
        """Index the last two dimensions of a tensor with this rectangle."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def contains(self, inner: Rect) -> bool:
        """True when ``inner`` lies inside this rectangle."""
        return self.y0 <= inner.y0 and inner.y1 <= self.y1 and self.x0 <= inner.x0 and inner.x1 <= self.x1

    def relative_to(self, outer: Rect) -> Rect:
        """This rectangle in the coordinates of ``outer`` (which must contain it)."""
        return Rect(self.y0 - outer.y0, self.y1 - outer.y0, self.x0 - outer.x0, self.x1 - outer.x0)


def level_sizes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    """Spatial size at each level of a 2x pyramid: level 0 is full size, each next one halves.

    Halving floors, as the VAE downsamplers do (zero pad right/bottom by one, 3x3 stride-2 conv).
    """
    sizes = [(height, width)]
    for _ in range(levels):
        h, w = sizes[-1]
        sizes.append((h // 2, w // 2))
    return sizes


def rect_at_level(rect: Rect, level: int, full: tuple[int, int], sizes: list[tuple[int, int]]) -> Rect:
    """Map a full-resolution rectangle to ``level``.

    Interior edges of a plan sit on multiples of ``2**levels``, so they divide exactly; an edge on
    the image border maps to that level's border (which floors for odd sizes).
    """
    h, w = sizes[level]
    y1 = h if rect.y1 == full[0] else rect.y1 >> level
    x1 = w if rect.x1 == full[1] else rect.x1 >> level
    return Rect(rect.y0 >> level, y1, rect.x0 >> level, x1)


def output_extent(geometry: str, window: Rect, out_hw: tuple[int, int]) -> Rect:
    """Where a layer's ``out_hw`` output for the input ``window`` lies at its output level.

    ``geometry`` is ``same`` (stride 1), ``up`` (2x upsample inside) or ``down`` (stride 2 inside).
    """
    if geometry == "same":
        y0, x0 = window.y0, window.x0
    elif geometry == "up":
        y0, x0 = 2 * window.y0, 2 * window.x0
    else:
        y0, x0 = window.y0 // 2, window.x0 // 2
    return Rect(y0, y0 + out_hw[0], x0, x0 + out_hw[1])
