"""Device memory of a tiled Qwen-Image decode, counted tensor by tensor on the meta device (no GPU).

Full-size ``AutoencoderKLQwenImage`` (the Wan 2.1 network, 96 base channels) in bf16; see
tests/tiled_vae/test_memory.py for the counting and for why one untiled 512 px tile is what
ComfyUI's tiled decode holds per tile.
"""

import torch
from diffusers import AutoencoderKLQwenImage, AutoencoderKLWan
from quadtree_tile.benchmarks.tensor_memory import counted_peak_gib, on_meta
from quadtree_tile.tiled_vae import TilingConfig, tiled
from quadtree_tile.tiled_vae.families import detect
from quadtree_tile.tiled_vae.video.chunk_calls import call_bytes_per_pixel

TILE = 512


def _tiled_decode_peak(vae, z: torch.Tensor) -> float:
    def run():
        with tiled(vae.decoder, TilingConfig(tile_size=TILE, planner="grid", mode="tiled", activation_store="cpu")):
            vae.decode(z)

    return counted_peak_gib(run)


def test_tiled_still_decode_holds_less_than_one_comfyui_tile():
    vae = on_meta(lambda: AutoencoderKLQwenImage(base_dim=96, z_dim=16))
    z = torch.empty(1, 16, 1, 2048 // 8, 2048 // 8, device="meta", dtype=torch.bfloat16)
    one_tile = counted_peak_gib(lambda: vae.decode(z[..., : TILE // 8, : TILE // 8]))
    assert _tiled_decode_peak(vae, z) < 0.6 * one_tile


def test_budget_model_covers_a_video_decode():
    """Automatic tiles come from this model: it must not promise less than a clip's calls hold.

    Two latent frames: the second call decodes four frames per tile, as every later call of a
    long clip does (the counted peak of 81 frames is within 4 % of this one).
    """
    vae = on_meta(lambda: AutoencoderKLWan(base_dim=96, z_dim=16))
    z = torch.empty(1, 16, 2, 480 // 8, 832 // 8, device="meta", dtype=torch.bfloat16)
    program = detect(vae.decoder).build(vae.decoder)
    modelled = call_bytes_per_pixel(program, z[:, :, :1]) * TILE * TILE / 2**30
    counted = _tiled_decode_peak(vae, z)
    assert counted <= modelled <= 3 * counted
