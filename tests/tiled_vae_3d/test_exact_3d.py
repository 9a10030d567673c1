"""Tiled equals untiled (fp32, max abs <= 1e-4) for every causal video VAE layout, encode and decode."""

import pytest
import torch
from quadtree_tile.tiled_vae import TilingConfig, tiled
from wan_models import LAYOUTS, decode_frames, encode_chunks

TOL = 1e-4


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def pair(request):
    return LAYOUTS[request.param]()


IMAGE = (24, 40)
"""Odd multiples of the encoder's 8x alignment (3 x 5); for Wan 2.2 this is the patchified input."""


@pytest.mark.parametrize("frames", [1, 2])
def test_decode_matches_untiled(pair, frames):
    z = torch.randn(1, pair.latent_channels, frames, 7, 9)  # odd latent size: 56x72 px
    with torch.no_grad():
        ref = decode_frames(pair.decoder, z)
        with tiled(pair.decoder, TilingConfig(tile_size=32, mode="tiled")) as hook:
            out = decode_frames(pair.decoder, z)
    report = hook.handler.report
    assert report.tiled and report.family.startswith(pair.family)
    assert len(report.plan) == 6
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("frames", [1, 5])
def test_encode_matches_untiled(pair, frames):
    x = torch.randn(1, pair.image_channels, frames, *IMAGE)
    with torch.no_grad():
        ref = encode_chunks(pair.encoder, x)
        with tiled(pair.encoder, TilingConfig(tile_size=16, mode="tiled")) as hook:
            out = encode_chunks(pair.encoder, x)
    assert hook.handler.report.tiled and len(hook.handler.report.plan) > 1
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= TOL
