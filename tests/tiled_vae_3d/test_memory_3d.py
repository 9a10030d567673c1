"""Device memory of tile-major Qwen-Image and Wan decodes, counted tensor by tensor on the meta device.

Counted, not measured: on a GPU the allocator's peak was 7-15x these counts for the same runs
(cuDNN workspaces, allocator slack), so these tests check how memory scales and how the budget
model relates to the count, never a GPU figure. Full-size ``AutoencoderKLQwenImage`` /
``AutoencoderKLWan`` (96 base channels) in bf16. ComfyUI's ``VAEDecodeTiled`` decodes each 512 px
tile with the untiled decoder, so one untiled decode of a 64x64 latent is what it holds per tile.
"""

import pytest
import torch
from diffusers import AutoencoderKLQwenImage, AutoencoderKLWan
from quadtree_tile.benchmarks.tensor_memory import counted_peak_gib, on_meta
from quadtree_tile.tiled_vae import TilingConfig, tiled

TILE = 512
GIB = 2**30


def _tiled_decode(vae, z: torch.Tensor) -> tuple[float, object]:
    """Counted peak (GiB) of a tile-major decode at TILE px tiles, and what the run said it needs."""
    with tiled(vae, TilingConfig(tile_size=TILE, planner="grid", mode="tiled")) as hook:
        peak = counted_peak_gib(lambda: vae.decode(z))
    return peak, hook.handler.report.needs


@pytest.fixture(scope="module")
def qwen():
    return on_meta(lambda: AutoencoderKLQwenImage(base_dim=96, z_dim=16))


@pytest.fixture(scope="module")
def stills(qwen):
    return {side: _tiled_decode(qwen, _latent(1, side, side)) for side in (2048, 4096)}


def _latent(frames: int, height: int, width: int) -> torch.Tensor:
    return torch.empty(1, 16, frames, height // 8, width // 8, device="meta", dtype=torch.bfloat16)


def test_a_still_holds_less_than_one_comfyui_tile(qwen, stills):
    one_tile = counted_peak_gib(lambda: qwen.decode(_latent(1, TILE, TILE)))
    assert stills[2048][0] < 0.7 * one_tile


def test_only_the_latent_size_part_grows_with_the_image(stills):
    """4x the pixels: the peak grows by no more than the latent-size intermediates and the output."""
    (small, small_needs), (large, large_needs) = stills[2048], stills[4096]
    growth = (large_needs.fixed + large_needs.store - small_needs.fixed - small_needs.store) / GIB
    assert large - small <= growth


def test_the_budget_model_covers_a_video_decode():
    """Automatic tiles come from this model: it must not promise less than a clip holds. Three latent
    frames: the later ones decode four frames per tile, as every frame of a long clip does."""
    vae = on_meta(lambda: AutoencoderKLWan(base_dim=96, z_dim=16))
    peak, needs = _tiled_decode(vae, _latent(3, 480, 832))
    modelled = (needs.per_pixel * TILE * TILE + needs.fixed + needs.store) / GIB
    assert peak <= modelled


@pytest.mark.parametrize(("role", "most"), [("decode", 0.15), ("encode", 0.25)])
def test_tiles_recompute_little_of_a_2048_still(qwen, role, most):
    """Windows shrink to the reach the rest of the path needs, and the encoder's latent-level stages
    run as their own tiles, so 512 px tiles recompute about a tenth (decode) to a fifth (encode)."""
    x = (
        _latent(1, 2048, 2048)
        if role == "decode"
        else torch.empty(1, 3, 1, 2048, 2048, device="meta", dtype=torch.bfloat16)
    )
    with tiled(qwen, TilingConfig(tile_size=TILE, mode="tiled")) as hook:
        counted_peak_gib(lambda: qwen.decode(x) if role == "decode" else qwen.encode(x))
    assert 0 < hook.handler.report.halo_overhead <= most
