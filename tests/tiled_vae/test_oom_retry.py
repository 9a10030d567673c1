"""Running out of device memory halves the tile and retries; the result stays exact."""

import pytest
import torch
from exactness import assert_matches_untiled
from quadtree_tile.tiled_vae import TilingConfig, tiled
from vae_models import comfy_pair


@pytest.fixture
def decoder_and_reference():
    """A decoder whose output conv 'runs out of memory' on windows above 90x90 px, and its
    untiled output on a 20x20 latent computed before the limit is installed."""
    _, dec = comfy_pair()
    z = torch.randn(1, 4, 20, 20)
    with torch.no_grad():
        ref = dec(z)
    original = dec.conv_out.forward

    def limited(x):
        if x.shape[-2] * x.shape[-1] > 90 * 90:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(x)

    dec.conv_out.forward = limited
    yield dec, z, ref
    del dec.conv_out.forward


def test_oom_halves_tile_and_result_is_exact(decoder_and_reference):
    dec, z, ref = decoder_and_reference
    with torch.no_grad(), tiled(dec, TilingConfig(tile_size=160, mode="tiled")) as hook:
        out = dec(z)
    assert hook.handler.report.retries == 1
    assert hook.handler.report.tile_size == 80
    assert_matches_untiled(out, ref)


def test_auto_mode_tiles_when_the_untiled_run_runs_out_of_memory(decoder_and_reference):
    dec, z, ref = decoder_and_reference
    with torch.no_grad(), tiled(dec, TilingConfig(tile_size=0, mode="auto")) as hook:
        out = dec(z)
    assert hook.handler.report.tiled
    assert hook.handler.report.tile_size == 80
    assert_matches_untiled(out, ref)
