"""Tile sizes typed in image pixels mean image pixels, also when the VAE folds pixels into channels."""

from quadtree_tile.tiled_vae import TilingConfig, in_image_pixels
from wan_models import comfy_wan21, comfy_wan22


def test_wan22_decoder_tiles_count_image_pixels():
    """Wan 2.2 patchifies 2x2 outside its decoder (16x VAE, 8x decoder): 512 image px = 256 decoder px."""
    cfg = in_image_pixels(TilingConfig(tile_size=512, min_tile_size=128), comfy_wan22().decoder, image_ratio=16)
    assert (cfg.tile_size, cfg.min_tile_size) == (256, 64)


def test_wan21_and_automatic_sizes_are_unchanged():
    cfg = TilingConfig(tile_size=512, min_tile_size=128)
    assert in_image_pixels(cfg, comfy_wan21().decoder, image_ratio=8) == cfg
    auto = in_image_pixels(TilingConfig(tile_size=0), comfy_wan22().decoder, image_ratio=16)
    assert auto.tile_size == 0
