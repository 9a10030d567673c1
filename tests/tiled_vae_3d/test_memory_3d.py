"""Device memory of a tiled Qwen-Image decode, counted tensor by tensor on the meta device (no GPU).

Full-size ``AutoencoderKLQwenImage`` (the Wan 2.1 network, 96 base channels) in bf16; see
tests/tiled_vae/test_memory.py for the counting and for why one untiled 512 px tile is what
ComfyUI's tiled decode holds per tile.
"""

import torch
from diffusers import AutoencoderKLQwenImage
from quadtree_tile.benchmarks.tensor_memory import TensorMemory
from quadtree_tile.tiled_vae import TilingConfig, tiled

TILE = 512


def _peak(fn) -> int:
    with torch.no_grad(), TensorMemory() as counted:
        fn()
    return counted.peak


def test_tiled_still_decode_holds_less_than_one_comfyui_tile():
    with torch.device("meta"):
        vae = AutoencoderKLQwenImage(base_dim=96, z_dim=16).to(torch.bfloat16).eval()
    z = torch.empty(1, 16, 1, 2048 // 8, 2048 // 8, device="meta", dtype=torch.bfloat16)

    def ours():
        with tiled(vae.decoder, TilingConfig(tile_size=TILE, planner="grid", mode="tiled", store="cpu")):
            vae.decode(z)

    one_tile = _peak(lambda: vae.decode(z[..., : TILE // 8, : TILE // 8]))
    assert _peak(ours) < 0.6 * one_tile
