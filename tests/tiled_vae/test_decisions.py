"""What a decode runs for the free memory a GPU reports: untiled, or tiled with which tile and store.

The SDXL-class decoder (diffusers ``AutoencoderKL``, 128-512 channels) is built on the meta device
in bf16, as ComfyUI holds it; the free memory is mocked (139 GB: an H200; 8 GB; 2 GB), and the host's
untiled estimate is ComfyUI's ``memory_used_decode`` for SD/SDXL VAEs (``comfy/sd.py``: 2178 x
latent pixels x 64 x dtype bytes). Calls run under ``TensorMemory``, which lets meta tensors pass
the input checks; a tiled run is stopped at its first tile: the decision is made and reported
before any tile runs.
"""

import logging

import pytest
import torch
from diffusers import AutoencoderKL
from quadtree_tile.benchmarks.common import SDXL_CLASS_CONFIG
from quadtree_tile.benchmarks.tensor_memory import TensorMemory, on_meta
from quadtree_tile.tiled_vae import TilingConfig, tiled
from quadtree_tile.tiled_vae.policy import MIN_STORE_TILE, summary

GB = 10**9


def comfy_sd_decode_estimate(z: torch.Tensor) -> float:
    """ComfyUI 0.3.64's untiled memory estimate for an SD/SDXL VAE decode (bf16: 2 bytes)."""
    return 2178 * z.shape[2] * z.shape[3] * 64 * z.element_size()


class FirstTile(Exception):
    """Raised at the first tile: the decision is all these tests need."""


def _stop() -> None:
    raise FirstTile


@pytest.fixture(scope="module")
def decoder():
    return on_meta(lambda: AutoencoderKL(**SDXL_CLASS_CONFIG)).decoder


# side, free bytes -> untiled?, tile px, where the full-size activations live. When the store does
# not fit, the device keeps room for a MIN_STORE_TILE tile and gives the rest to the store.
TABLE = [
    (2048, 139 * GB, True, None, None),
    (2048, 8 * GB, False, 1032, "device"),  # 4 GiB store + 1032² tile + keys/values in 80% of 7.45 GiB
    (2048, 2 * GB, False, MIN_STORE_TILE, "split"),
    (4096, 139 * GB, True, None, None),
    (4096, 8 * GB, False, MIN_STORE_TILE, "split"),
    (4096, 2 * GB, False, MIN_STORE_TILE, "split"),
]


@pytest.mark.parametrize(("side", "free", "untiled", "tile", "store"), TABLE)
def test_decision_for_free_memory(decoder, caplog, side, free, untiled, tile, store):
    z = torch.empty(1, 4, side // 8, side // 8, device="meta", dtype=torch.bfloat16)
    hooks = tiled(
        decoder,
        TilingConfig(),  # the node's defaults: mode auto, automatic tile, store auto
        free_memory=lambda device: free,
        untiled_memory=comfy_sd_decode_estimate,
        check_interrupt=_stop,
    )
    with caplog.at_level(logging.INFO, logger="comfyui-quadtree-tile"), torch.no_grad(), TensorMemory(), hooks:
        if untiled:
            decoder(z)
        else:
            with pytest.raises(FirstTile):
                decoder(z)
    report = hooks.handler.report
    assert report.tiled is not untiled
    assert f"{free / 2**30:.2f} GiB free" in report.reason
    if untiled:
        assert "untiled" in caplog.text
        return
    assert report.tile_size == tile
    line = summary("decoder", report)  # the run's one log line
    assert f"free {free / 2**30:.2f} GiB" in line and f"store on {report.store}" in line
    assert f"tile {report.needs.per_pixel * tile**2 / 2**30:.2f} GiB" in line  # the tile's working set
    if store == "device":
        assert report.store.startswith("meta (") and "pinned" not in report.store
    else:
        device_gib = float(report.store.split()[1])
        assert 0 < device_gib * 2**30 <= 0.8 * free and "+ pinned CPU" in report.store
        assert all(r.x0 == 0 and r.x1 == side for r in report.plan)  # the host store runs full-width bands


def test_the_host_estimate_decides_untiled_not_our_count(decoder):
    """With ComfyUI's estimate (17 GiB at 2048²) above the free memory, auto tiles even though
    the pack's own count of the untiled peak would fit."""
    z = torch.empty(1, 4, 256, 256, device="meta", dtype=torch.bfloat16)
    hooks = tiled(
        decoder,
        TilingConfig(),
        free_memory=lambda device: 16 * GB,
        untiled_memory=comfy_sd_decode_estimate,
        check_interrupt=_stop,
    )
    with torch.no_grad(), TensorMemory(), hooks, pytest.raises(FirstTile):
        decoder(z)
    assert hooks.handler.report.tiled
    assert "untiled needs 17.02 GiB" in hooks.handler.report.reason
