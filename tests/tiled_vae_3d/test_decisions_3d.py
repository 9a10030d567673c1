"""What auto mode does for a whole Qwen-Image VAE at mocked free device memory (meta device, no compute)."""

import logging

import pytest
import torch
from diffusers import AutoencoderKLQwenImage
from quadtree_tile.benchmarks.tensor_memory import counted_peak_gib, on_meta
from quadtree_tile.tiled_vae import TilingConfig, tiled
from quadtree_tile.tiled_vae.policy import USABLE_SHARE

GIB = 2**30


def comfy_estimate(z: torch.Tensor) -> float:
    """ComfyUI 0.3.64's ``memory_used_decode`` for the Wan 2.1 / Qwen-Image VAE, in bf16."""
    return 7000 * z.shape[3] * z.shape[4] * 64 * 2


@pytest.fixture(scope="module")
def vae():
    return on_meta(lambda: AutoencoderKLQwenImage(base_dim=96, z_dim=16))


def _decode(vae, side: int, free_gib: float, caplog):
    z = torch.empty(1, 16, 1, side // 8, side // 8, device="meta", dtype=torch.bfloat16)
    hook = tiled(vae, TilingConfig(), free_memory=lambda _: int(free_gib * GIB), untiled_memory=comfy_estimate)
    with caplog.at_level(logging.INFO, "comfyui-quadtree-tile"), hook:
        counted_peak_gib(lambda: vae.decode(z))  # runs the meta tensors through the counter, which answers .item()
    return hook.handler.report


def test_with_139_gb_free_auto_runs_the_vaes_own_decode(vae, caplog):
    report = _decode(vae, 2048, 139, caplog)
    assert not report.tiled
    assert "untiled needs 54.69 GiB of 139.00 GiB free" in report.reason  # ComfyUI's estimate
    [record] = caplog.records
    assert "untiled" in record.message and "free 139.00 GiB" in record.message


@pytest.mark.parametrize(("side", "free_gib"), [(2048, 2), (2048, 8), (4096, 8)])
def test_short_of_memory_auto_tiles_within_what_is_free(vae, caplog, side, free_gib):
    report = _decode(vae, side, free_gib, caplog)
    needs = report.needs
    assert report.tiled and report.tile_size < side
    planned = needs.per_pixel * report.tile_size**2 + needs.fixed + (needs.store if report.store == "meta" else 0)
    assert planned <= free_gib * GIB * USABLE_SHARE  # the tile fits the path's own estimate
    [record] = caplog.records
    assert f"tiles of up to {report.tile_size} px" in record.message and f"free {free_gib:.2f} GiB" in record.message
