"""Device memory of a tiled decode, counted tensor by tensor on the meta device (no GPU, no compute).

The model is the SDXL-class decoder at full size (diffusers ``AutoencoderKL``, 128-512 channels)
in bf16; ``TensorMemory`` counts what a GPU allocator would hold (benchmarks/tensor_memory.py).
ComfyUI's ``VAEDecodeTiled`` decodes each 512 px tile with the untiled decoder and moves it off the
GPU, so one untiled decode of a 64x64 latent is what it holds per tile.
"""

import pytest
import torch
from diffusers import AutoencoderKL
from quadtree_tile.benchmarks.common import SDXL_CLASS_CONFIG
from quadtree_tile.benchmarks.tensor_memory import counted_peak_gib, on_meta
from quadtree_tile.tiled_vae import TilingConfig, tiled
from quadtree_tile.tiled_vae.families import detect
from quadtree_tile.tiled_vae.image.budget import bytes_per_pixel

TILE = 512


@pytest.fixture(scope="module")
def decoder():
    return on_meta(lambda: AutoencoderKL(**SDXL_CLASS_CONFIG)).decoder


def _tiled_peak(dec, side: int) -> float:
    z = torch.empty(1, 4, side // 8, side // 8, device="meta", dtype=torch.bfloat16)

    def run():
        with tiled(dec, TilingConfig(tile_size=TILE, planner="grid", mode="tiled", activation_store="cpu")):
            dec(z)

    return counted_peak_gib(run)


@pytest.fixture(scope="module")
def peaks(decoder):
    return {side: _tiled_peak(decoder, side) for side in (1024, 2048)}


def test_tiled_decode_holds_less_than_one_comfyui_tile(decoder, peaks):
    z = torch.empty(1, 4, TILE // 8, TILE // 8, device="meta", dtype=torch.bfloat16)
    one_tile = counted_peak_gib(lambda: decoder(z))
    assert peaks[2048] < 0.85 * one_tile


def test_device_memory_does_not_grow_with_the_image(peaks):
    """Full-size activations stay on the CPU store: 4x the pixels, the same device peak."""
    assert peaks[2048] <= 1.02 * peaks[1024]


def test_budget_model_covers_the_counted_peak_without_waste(decoder, peaks):
    """The automatic tile size comes from this model: too low runs out of memory, too high wastes it."""
    program = detect(decoder).build(decoder)
    modelled = bytes_per_pixel(program, 1, torch.bfloat16) * TILE * TILE / 2**30
    assert peaks[2048] <= modelled <= 2 * peaks[2048]


def test_split_store_holds_its_device_share_and_one_tile(decoder):
    """With 2 GB free a 2048² decode keeps part of its store on the device and the rest in pinned
    host memory: the device holds that share, one tile's working set and the attention's keys and
    values, and never the 17 GiB ComfyUI estimates for the untiled decode."""
    z = torch.empty(1, 4, 256, 256, device="meta", dtype=torch.bfloat16)
    hooks = tiled(decoder, TilingConfig(), free_memory=lambda device: 2 * 10**9)

    def run():
        with hooks:
            decoder(z)

    peak = counted_peak_gib(run)
    report = hooks.handler.report
    assert report.tiled and "+ pinned CPU" in report.store
    device_share = float(report.store.split()[1])
    tile = report.needs.per_pixel * report.tile_size**2 / 2**30
    assert device_share > 0
    assert peak <= device_share + tile + report.needs.fixed / 2**30
