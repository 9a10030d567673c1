"""Edit-image sizes and resampling of the three presets (DiffSynth-Studio, diffusers, ComfyUI).

Each edit image is resized twice: a *vision* copy for Qwen2.5-VL's vision tower and a *VAE* copy
that becomes the reference latent. The presets differ in the target sizes, the rounding and the
resampling filter; the numbers here reproduce each implementation's arithmetic exactly:

* ``diffsynth`` (DiffSynth-Studio ``QwenImagePipeline`` with ``edit_image_auto_resize=True``):
  VAE copy at about 1024² px with sides rounded to multiples of 32, PIL bicubic. Edit: the vision
  tower sees that same image. Edit-plus: the vision copy is made *from the VAE copy* at about 384² px
  (/32, bicubic).
* ``diffusers`` (``QwenImageEditPipeline`` / ``QwenImageEditPlusPipeline``): the same 1024² and
  384² targets (/32) computed from the original image, PIL Lanczos.
* ``comfy`` (ComfyUI's TextEncodeQwenImageEdit / ...EditPlus): sides ``round(side * scale)`` with no
  /32 snap, torch "area" interpolation; edit-plus VAE sides rounded to multiples of 8; the vision
  tower's own 28-px snap is left to ComfyUI (bilinear).

For ``diffsynth`` and ``diffusers`` the vision copy is also snapped to multiples of 28 here, with PIL
bicubic as the Qwen2-VL image processor does, so ComfyUI's own snap is then a no-op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .templates import Mode

VAE_AREA = 1024 * 1024
EDIT_PLUS_VL_AREA = 384 * 384
VL_FACTOR = 28
"""Vision patch 14 x spatial merge 2: vision-copy sides are multiples of this."""
VL_MIN_PIXELS = 3136
VL_MAX_PIXELS = 12845056
MIN_SIDE = 28
"""Smallest edit-image side accepted (the Qwen2-VL processor's own lower bound)."""
MAX_ASPECT = 200
"""Largest aspect ratio accepted (the Qwen2-VL processor rejects anything wider)."""
LATENT_FACTOR = 8
"""Qwen-Image VAE downscale factor: the reference latent is the VAE copy's size // 8."""


@dataclass(frozen=True)
class Preset:
    """How one reference implementation resizes edit images and limits prompts."""

    name: str
    sizing: str
    """``"ratio"``: w = sqrt(area * w/h), h = w / ratio, each rounded to ``multiple``;
    ``"scale"``: each side times sqrt(area / (w * h)), rounded to ``multiple``."""
    plus_vae_multiple: int
    edit_vae_multiple: int
    plus_vl_multiple: int
    resample: str
    """``"bicubic"`` / ``"lanczos"`` (PIL on 8-bit pixels) or ``"area"`` (torch on floats)."""
    vl_from_vae_copy: bool
    """Edit-plus vision copy resized from the VAE copy (DiffSynth) rather than from the original."""
    snap_vl: bool
    """Snap the vision copy to multiples of 28 here (PIL bicubic) rather than leave it to ComfyUI."""
    t2i_max_tokens: int | None
    """Text-to-image conditioning length limit after the drop (None: unlimited)."""


PRESETS: dict[str, Preset] = {
    "diffsynth": Preset("diffsynth", "ratio", 32, 32, 32, "bicubic", True, True, 4096),
    "diffusers": Preset("diffusers", "ratio", 32, 32, 32, "lanczos", False, True, 512),
    "comfy": Preset("comfy", "scale", 8, 1, 1, "area", False, False, None),
}


def target_size(preset: Preset, area: int, multiple: int, width: int, height: int) -> tuple[int, int]:
    """(width, height) of an image of ``width`` x ``height`` resized to about ``area`` pixels."""
    if preset.sizing == "ratio":
        ratio = width / height
        w = math.sqrt(area * ratio)
        h = w / ratio
    else:
        scale = math.sqrt(area / (width * height))
        w, h = width * scale, height * scale
    return round(w / multiple) * multiple, round(h / multiple) * multiple


def smart_resize(width: int, height: int) -> tuple[int, int]:
    """(width, height) the Qwen2-VL processor (and ComfyUI) snaps a vision image to: multiples of 28."""
    f = VL_FACTOR
    h_bar, w_bar = round(height / f) * f, round(width / f) * f
    if h_bar * w_bar > VL_MAX_PIXELS:
        beta = math.sqrt(height * width / VL_MAX_PIXELS)
        h_bar = max(f, math.floor(height / beta / f) * f)
        w_bar = max(f, math.floor(width / beta / f) * f)
    elif h_bar * w_bar < VL_MIN_PIXELS:
        beta = math.sqrt(VL_MIN_PIXELS / (height * width))
        h_bar = math.ceil(height * beta / f) * f
        w_bar = math.ceil(width * beta / f) * f
    return w_bar, h_bar


@dataclass(frozen=True)
class ImageSizes:
    """Sizes (width, height) one edit image goes through; all derived from the input size."""

    source: tuple[int, int]
    vae: tuple[int, int]
    """The VAE copy as resized (ComfyUI's VAE then centre-crops it to multiples of 8)."""
    vision: tuple[int, int]
    """The vision copy as resized here (before the 28-px snap when the host does it)."""
    vision_grid: tuple[int, int]
    """The vision copy after the 28-px snap, as the vision tower sees it."""

    @property
    def vision_tokens(self) -> int:
        """Embeddings the vision tower adds for this image (one per 28 x 28 block)."""
        return (self.vision_grid[0] // VL_FACTOR) * (self.vision_grid[1] // VL_FACTOR)

    @property
    def latent(self) -> tuple[int, int]:
        """(width, height) of the reference latent a Qwen-Image VAE makes from the VAE copy."""
        return self.vae[0] // LATENT_FACTOR, self.vae[1] // LATENT_FACTOR


def check_image_size(width: int, height: int, where: str) -> None:
    """Reject images the vision processor cannot take (too small, too thin)."""
    if min(width, height) < MIN_SIDE:
        raise ValueError(
            f"{where} is {width}x{height} px; an edit image needs at least {MIN_SIDE} px on each side "
            "(the vision tower works on 28-px blocks). Connect the real image, not a placeholder or mask."
        )
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise ValueError(
            f"{where} is {width}x{height} px, an aspect ratio above {MAX_ASPECT}:1, which the Qwen2-VL "
            "vision processor rejects. Crop it first."
        )


def image_sizes(preset: Preset, mode: Mode, width: int, height: int) -> ImageSizes:
    """The sizes of the VAE and vision copies of a ``width`` x ``height`` edit image."""
    mode = Mode(mode)
    if mode is Mode.EDIT:
        vae = target_size(preset, VAE_AREA, preset.edit_vae_multiple, width, height)
        vision = vae  # all three feed the vision tower the same ~1 MP image as the VAE
    elif mode is Mode.EDIT_PLUS:
        vae = target_size(preset, VAE_AREA, preset.plus_vae_multiple, width, height)
        base = vae if preset.vl_from_vae_copy else (width, height)
        vision = target_size(preset, EDIT_PLUS_VL_AREA, preset.plus_vl_multiple, *base)
    else:
        raise ValueError("Text-to-image takes no images.")
    return ImageSizes((width, height), vae, vision, smart_resize(*vision))


_PIL_FILTERS = {"bicubic": "BICUBIC", "lanczos": "LANCZOS"}


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """A ComfyUI image (H, W, C) in 0..1 as 8-bit RGB, the exact inverse of LoadImage's /255."""
    return np.round(image[..., :3].detach().float().clamp(0, 1).cpu().numpy() * 255.0).astype(np.uint8)


def resample(image: torch.Tensor, size: tuple[int, int], method: str) -> torch.Tensor:
    """Resize one ComfyUI image (H, W, C) in 0..1 to ``size`` = (width, height); returns (H', W', 3).

    ``bicubic`` / ``lanczos`` run PIL on the 8-bit image, as DiffSynth-Studio and diffusers do on the
    PIL images they are given; ``area`` runs torch on floats, as ComfyUI does.
    """
    width, height = size
    if method == "area":
        x = image[..., :3].movedim(-1, 0)[None].float()
        return F.interpolate(x, size=(height, width), mode="area")[0].movedim(0, -1).to(image.dtype)
    from PIL import Image

    pil = Image.fromarray(to_uint8(image), mode="RGB")
    if pil.size != (width, height):
        pil = pil.resize((width, height), resample=getattr(Image.Resampling, _PIL_FILTERS[method]))
    return torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).to(image.device)


@dataclass(frozen=True)
class PreparedImage:
    """One edit image resized for the vision tower and (optionally) the VAE."""

    sizes: ImageSizes
    vision: torch.Tensor
    """(1, H, W, 3) in 0..1, ready for ComfyUI's tokenizer."""
    vae: torch.Tensor | None
    """(1, H, W, 3) in 0..1, ready for ``vae.encode``; None when no VAE copy was asked for."""


def prepare_image(preset: Preset, mode: Mode, image: torch.Tensor, with_vae: bool) -> PreparedImage:
    """Resize one (H, W, C) image the way ``preset`` does for ``mode``."""
    height, width = int(image.shape[0]), int(image.shape[1])
    mode = Mode(mode)
    sizes = image_sizes(preset, mode, width, height)
    need_vae_copy = with_vae or mode is Mode.EDIT or preset.vl_from_vae_copy
    vae_copy = resample(image, sizes.vae, preset.resample) if need_vae_copy else None
    if mode is Mode.EDIT:
        vision = vae_copy
    else:
        vision = resample(vae_copy if preset.vl_from_vae_copy else image, sizes.vision, preset.resample)
    if preset.snap_vl:
        vision = resample(vision, sizes.vision_grid, "bicubic")
    return PreparedImage(sizes, vision[None], vae_copy[None] if with_vae else None)
