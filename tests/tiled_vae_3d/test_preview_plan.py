"""Tile Preview's plan is the plan the tiled run uses, for a whole video VAE and what its method takes."""

import pytest
import torch
from quadtree_tile.tiled_vae import TilingConfig, plan_tiles, tiled
from wan_models import LAYOUTS, host_decode, host_encode


@pytest.mark.parametrize("layout", ["comfyui-wan22", "diffusers-qwenimage"])
def test_the_encode_preview_plans_what_the_encode_runs(layout):
    """Wan 2.2 encodes 3-channel pixels it folds into 12 channels at half the size; the preview does too."""
    pair = LAYOUTS[layout]()
    x = torch.randn(1, pair.pixel_channels, 5, 48, 80)
    config = TilingConfig(tile_size=16, mode="tiled")
    plan, full = plan_tiles(pair.vae, x, config, "encode")
    with torch.no_grad(), tiled(pair.vae, config) as hook:
        host_encode(pair.vae, x)
    assert len(plan) > 1 and plan == hook.handler.report.plan
    assert full == ((24, 40) if layout == "comfyui-wan22" else (48, 80))


def test_an_automatic_tile_previews_the_tile_the_decode_chooses():
    pair = LAYOUTS["comfyui-wan21"]()
    z = torch.randn(1, pair.latent_channels, 2, 12, 20)
    free = lambda _: 2 * 2**20  # noqa: E731 - a mocked 2 MiB device
    config = TilingConfig(mode="tiled")
    plan, _ = plan_tiles(pair.vae, z, config, "decode", free_memory=free)
    with torch.no_grad(), tiled(pair.vae, config, free_memory=free) as hook:
        host_decode(pair.vae, z)
    assert len(plan) > 1 and plan == hook.handler.report.plan


def test_a_module_that_cannot_take_the_input_is_a_clear_error():
    pair = LAYOUTS["comfyui-wan21"]()
    with pytest.raises(ValueError, match="16 channels but this Wan 2.1 / Qwen-Image VAE's decoder takes 4"):
        plan_tiles(pair.vae, torch.randn(1, 16, 1, 8, 8), TilingConfig(tile_size=16), "decode")
