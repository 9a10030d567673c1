"""Bad input to a 3D VAE: a clear error before anything runs; the hook always comes off."""

import pytest
import torch
from exactness import assert_matches_untiled
from quadtree_tile.tiled_vae import TilingConfig, tiled
from wan_models import LAYOUTS, comfy_wan21, decode_frames, out_of_memory_above


@pytest.fixture(scope="module")
def pair():
    return comfy_wan21()


def test_4d_latent_is_a_clear_error_and_the_model_is_untouched(pair):
    cache = [None] * 40
    with (
        pytest.raises(ValueError, match=r"Wan 2.1 / Qwen-Image VAE's decoder takes 5D .*a single image is one frame"),
        tiled(pair.decoder, TilingConfig(mode="tiled")),
    ):
        pair.decoder(torch.randn(1, 4, 7, 9), feat_cache=cache, feat_idx=[0])
    assert all(v is None for v in cache)
    assert "forward" not in pair.decoder.__dict__


def test_channel_mismatch_names_both_counts_and_the_families(pair):
    z = torch.randn(1, 48, 1, 7, 9)
    match = r"48 channels .* takes 4.*16 latent channels.*48: Wan 2.2"
    with pytest.raises(ValueError, match=match), tiled(pair.decoder, TilingConfig(mode="tiled")):
        decode_frames(pair.decoder, z)


def test_hook_is_removed_after_an_exception_at_a_later_frame(pair):
    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) > 12:  # well into the second frame
            raise KeyboardInterrupt("stopped by the user")

    z = torch.randn(1, 4, 3, 7, 9)
    hook = tiled(pair.decoder, TilingConfig(tile_size=32, mode="tiled"), check_interrupt=interrupt)
    with pytest.raises(KeyboardInterrupt), torch.no_grad(), hook:
        decode_frames(pair.decoder, z)
    assert "forward" not in pair.decoder.__dict__
    with torch.no_grad():  # and the model still decodes normally
        assert decode_frames(pair.decoder, z[:, :, :1]).shape == (1, 3, 1, 56, 72)


def test_out_of_memory_in_a_stage_halves_the_tile_and_stays_exact(pair):
    z = torch.randn(1, 4, 2, 7, 9)
    with torch.no_grad():
        ref = decode_frames(pair.decoder, z)
    hook = tiled(pair.decoder, TilingConfig(tile_size=64, mode="tiled"))
    with out_of_memory_above(pair.decoder.head[-1], 40 * 40), torch.no_grad(), hook:
        out = decode_frames(pair.decoder, z)
    assert hook.handler.report.tile_size == 32
    assert_matches_untiled(out, ref)


def test_a_whole_vae_refuses_a_4d_latent_before_anything_runs():
    pair = comfy_wan21()
    with (
        pytest.raises(ValueError, match=r"takes 5D tensors .*a single image is one frame"),
        tiled(pair.vae, TilingConfig(mode="tiled")),
    ):
        pair.vae.decode(torch.randn(1, 4, 7, 9))
    assert "decode" not in pair.vae.__dict__ and "encode" not in pair.vae.__dict__


def test_a_whole_wan22_vae_names_the_pixels_it_takes():
    """Wan 2.2 folds 2x2 pixels into 12 channels itself: its encode takes 3-channel images."""
    vae = LAYOUTS["comfyui-wan22"]().vae
    match = r"the input has 12 channels but this Wan 2.2 VAE's encoder takes 3"
    with pytest.raises(ValueError, match=match), tiled(vae, TilingConfig(mode="tiled")):
        vae.encode(torch.randn(1, 12, 1, 32, 32))
