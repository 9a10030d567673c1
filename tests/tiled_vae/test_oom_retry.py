"""Running out of device memory halves the tile and retries; the result stays exact."""

import torch
from quadtree_tile.tiled_vae import TilingConfig, tiled
from vae_models import comfy_pair


def test_oom_halves_tile_and_result_is_exact():
    _, dec = comfy_pair()
    conv = dec.conv_out
    original = conv.forward

    def limited(x):
        if x.shape[-2] * x.shape[-1] > 90 * 90:  # "out of memory" for windows above 90x90 px
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(x)

    conv.forward = limited
    z = torch.randn(1, 4, 20, 20)
    try:
        with torch.no_grad(), tiled(dec, TilingConfig(tile_size=160, mode="tiled", planner="grid")) as hook:
            out = dec(z)
    finally:
        del conv.forward
    with torch.no_grad():
        ref = dec(z)
    assert hook.handler.report.retries == 1
    assert hook.handler.report.tile_size == 80
    assert (out - ref).abs().max().item() <= 1e-4
