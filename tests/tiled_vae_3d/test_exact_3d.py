"""Chunk calls made by someone else's loop (a hook on the encoder or decoder) equal untiled (fp32, max abs
<= 1e-4) for every causal video VAE layout, encode and decode."""

import pytest
import torch
from exactness import assert_matches_untiled
from quadtree_tile.tiled_vae import TilingConfig, tiled
from quadtree_tile.tiled_vae.families import wan_common
from wan_models import LAYOUTS, decode_frames, encode_chunks


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
    assert_matches_untiled(out, ref)


@pytest.mark.parametrize("frames", [1, 5])
def test_encode_matches_untiled(pair, frames):
    x = torch.randn(1, pair.image_channels, frames, *IMAGE)
    with torch.no_grad():
        ref = encode_chunks(pair.encoder, x)
        with tiled(pair.encoder, TilingConfig(tile_size=16, mode="tiled")) as hook:
            out = encode_chunks(pair.encoder, x)
    assert hook.handler.report.tiled and len(hook.handler.report.plan) > 1
    assert_matches_untiled(out, ref)


@pytest.mark.parametrize("role", ["decoder", "encoder"])
def test_middle_attention_in_row_bands_matches_untiled(pair, role, monkeypatch):
    """The middle attention keeps every key and value and runs its queries one latent row at a time."""
    monkeypatch.setattr(wan_common, "BAND_TOKENS", 1)
    module, run, x = (
        (pair.decoder, decode_frames, torch.randn(1, pair.latent_channels, 2, 7, 9))
        if role == "decoder"
        else (pair.encoder, encode_chunks, torch.randn(1, pair.image_channels, 5, *IMAGE))
    )
    with torch.no_grad():
        ref = run(module, x)
        with tiled(module, TilingConfig(tile_size=16, mode="tiled")):
            out = run(module, x)
    assert_matches_untiled(out, ref)
