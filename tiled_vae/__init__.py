"""Exact tiled VAE encode/decode: tiles return what the untiled model returns, up to float rounding.

Import-free of ComfyUI: needs only torch. Use :func:`tiled` as a context manager around any call
that reaches the VAE (``with tiled(vae, TilingConfig()): vae.decode(z)``).
"""

from .families import FAMILIES, Family, detect
from .geometry import Rect
from .hook import Hooks, MethodHook
from .planner import detail_map, grid_plan, quadtree_plan
from .policy import RunReport, TilingConfig
from .preview import draw_plan
from .tiler import TiledForward, check_call, in_image_pixels, plan_tiles, tiled

__all__ = [
    "FAMILIES",
    "Family",
    "Hooks",
    "MethodHook",
    "Rect",
    "RunReport",
    "TiledForward",
    "TilingConfig",
    "check_call",
    "detail_map",
    "detect",
    "draw_plan",
    "grid_plan",
    "in_image_pixels",
    "plan_tiles",
    "quadtree_plan",
    "tiled",
]
