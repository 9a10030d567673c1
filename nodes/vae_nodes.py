"""Quadtree VAE Decode / Encode / Tile Preview: exact tiled VAE nodes."""

from __future__ import annotations

from typing import Any

import torch

from ..tiled_vae import TilingConfig, check_call, in_image_pixels, plan_tiles
from ..tiled_vae.preview import draw_plan
from . import comfy_vae
from .vae_checks import check_image, check_latent, check_settings

CATEGORY = "quadtree_tile/vae"


def _tiling_inputs(unit: str) -> dict[str, tuple]:
    return {
        "tile_size": (
            "INT",
            {
                "default": 0,
                "min": 0,
                "max": 16384,
                "step": 64,
                "tooltip": f"Largest tile side in {unit} pixels. 0 picks the largest tile that fits in free "
                "GPU memory. The result is the same for every tile size; smaller tiles use less memory.",
            },
        ),
        "planner": (
            ["grid", "quadtree"],
            {
                "default": "grid",
                "tooltip": "How the image is cut. grid: the fewest equal tiles (fastest). quadtree: the grid's "
                "tiles split further where the content is busy. Both give the same exact result.",
            },
        ),
        "min_tile_size": (
            "INT",
            {
                "default": 0,
                "min": 0,
                "max": 16384,
                "step": 64,
                "tooltip": "Smallest quadtree tile side in pixels (0: a quarter of the tile size). Ignored by grid.",
            },
        ),
        "mode": (
            ["auto", "tiled", "untiled"],
            {
                "default": "auto",
                "tooltip": "auto: the VAE's own untiled run when ComfyUI's memory estimate for it fits in free "
                "GPU memory, else tiles sized to the free memory. tiled: always tile. untiled: the VAE's own "
                "run, as VAE Decode / VAE Encode do.",
            },
        ),
        "activation_store": (
            ["auto", "device", "cpu"],
            {
                "default": "auto",
                "tooltip": "Where full-size data that outlives one tile waits (image VAEs: activations between "
                "layers; video VAEs: the decoded frames). device: fastest; cpu: least GPU memory (moves data "
                "over PCIe); auto: the GPU while it fits beside a tile, the rest in system RAM.",
            },
        ),
    }


def _config(tile_size: int, planner: str, min_tile_size: int, mode: str, activation_store: str) -> TilingConfig:
    return TilingConfig(
        tile_size=tile_size, planner=planner, min_tile_size=min_tile_size, mode=mode, activation_store=activation_store
    )


class QuadtreeVAEDecode:
    """Decode a latent tile by tile; returns exactly what VAE Decode returns, in bounded memory."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "The latent to decode (image or video)."}),
                "vae": ("VAE", {"tooltip": "The VAE that matches the model which made the latent."}),
                **_tiling_inputs("output image"),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The decoded image(s); video latents give one image per frame.",)
    FUNCTION = "decode"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Exact tiled VAE decode: the same pixels as VAE Decode (up to float rounding), with GPU memory "
        "bounded by the tile instead of the image."
    )

    def decode(self, samples: dict, vae: Any, unique_id: str | None = None, **tiling: Any) -> tuple[torch.Tensor]:
        images, _ = comfy_vae.decode(vae, samples["samples"], _config(**tiling), unique_id)
        return (images,)


class QuadtreeVAEEncode:
    """Encode images tile by tile; returns exactly what VAE Encode returns, in bounded memory."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {
            "required": {
                "pixels": ("IMAGE", {"tooltip": "The image(s) to encode; an alpha channel is dropped."}),
                "vae": ("VAE", {"tooltip": "The VAE of the model the latent is for."}),
                **_tiling_inputs("input image"),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The latent, as VAE Encode makes it.",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Exact tiled VAE encode: the same latent as VAE Encode (up to float rounding), with GPU memory "
        "bounded by the tile instead of the image."
    )

    def encode(self, pixels: torch.Tensor, vae: Any, unique_id: str | None = None, **tiling: Any) -> tuple[dict]:
        latent, _ = comfy_vae.encode(vae, pixels, _config(**tiling), unique_id)
        return ({"samples": latent},)


class QuadtreeTilePreview:
    """Draw the tile plan a decode or encode would use over an image."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        inputs = _tiling_inputs("image")
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The image to draw the tiles on (the encode input or a decode)."}),
                "vae": ("VAE", {"tooltip": "The VAE whose encoder or decoder would be tiled."}),
                "tile_size": inputs["tile_size"],
                "planner": inputs["planner"],
                "min_tile_size": inputs["min_tile_size"],
            },
            "optional": {
                "samples": (
                    "LATENT",
                    {
                        "tooltip": "Give the latent to preview its decode plan (measured on the latent); "
                        "leave empty to preview the encode plan of the image."
                    },
                ),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The image with each tile tinted and outlined.",)
    FUNCTION = "preview"
    CATEGORY = CATEGORY
    DESCRIPTION = "Shows where Quadtree VAE Decode / Encode would cut the image with these settings."

    def preview(
        self,
        image: torch.Tensor,
        vae: Any,
        tile_size: int,
        planner: str,
        min_tile_size: int,
        samples: dict | None = None,
    ) -> tuple[torch.Tensor]:
        config = _config(tile_size, planner, min_tile_size, "tiled", "auto")
        check_settings(config)
        vae.throw_exception_if_invalid()
        model = vae.first_stage_model
        import comfy.model_management as mm

        if samples is not None:
            x, role = samples["samples"], "decode"
            check_latent(vae, x)
            module, ratio = getattr(model, "decoder", model), vae.spacial_compression_decode()
        else:
            check_image(vae, image)
            x, role = comfy_vae.encoder_input(vae, image), "encode"
            module, ratio = getattr(model, "encoder", model), vae.spacial_compression_encode()
        check_call(model, x, role)
        config = in_image_pixels(config, module, ratio)
        plan, full = plan_tiles(
            model, x.to(vae.vae_dtype), config, role, free_memory=lambda _: mm.get_free_memory(vae.device)
        )
        return (draw_plan(image, plan, full),)


NODES = (
    ("QuadtreeTile_VAEDecode", "Quadtree VAE Decode", QuadtreeVAEDecode),
    ("QuadtreeTile_VAEEncode", "Quadtree VAE Encode", QuadtreeVAEEncode),
    ("QuadtreeTile_TilePreview", "Quadtree Tile Preview", QuadtreeTilePreview),
)
