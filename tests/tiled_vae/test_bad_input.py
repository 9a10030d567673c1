"""Bad input gives a clear error before any tile runs, and the model is left exactly as it was."""

import logging

import pytest
import torch
from exactness import assert_matches_untiled
from quadtree_tile.tiled_vae import TilingConfig, tiled
from quadtree_tile.tiled_vae.image.groupnorm import GroupStats
from vae_models import comfy_pair


@pytest.fixture(scope="module")
def vae():
    return comfy_pair()


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def _unchanged(m, state):
    return "forward" not in m.__dict__ and all(torch.equal(v, state[k]) for k, v in m.state_dict().items())


def test_wrong_latent_channels(vae):
    _, dec = vae
    state = _state(dec)
    with (
        pytest.raises(ValueError, match="16 channels but this SD1.x / SDXL / SD3 / Flux VAE's decoder takes 4"),
        tiled(dec, TilingConfig(mode="tiled")),
    ):
        dec(torch.randn(1, 16, 32, 32))
    assert _unchanged(dec, state)


def test_nan_in_input(vae):
    _, dec = vae
    z = torch.randn(1, 4, 32, 32)
    z[0, 1, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"), tiled(dec, TilingConfig(mode="tiled")):
        dec(z)
    assert "forward" not in dec.__dict__


def test_one_pixel_wide_image(vae):
    enc, _ = vae
    with pytest.raises(ValueError, match="at least 8 px"), tiled(enc, TilingConfig(mode="tiled")):
        enc(torch.rand(1, 3, 64, 1))
    assert "forward" not in enc.__dict__


def test_tile_below_alignment_is_clamped_with_a_log_line(vae, caplog):
    _, dec = vae
    z = torch.randn(1, 4, 4, 6)
    with torch.no_grad():
        ref = dec(z)
        with caplog.at_level(logging.WARNING), tiled(dec, TilingConfig(tile_size=3, mode="tiled")) as hook:
            out = dec(z)
    assert "below this VAE's 8 px alignment" in caplog.text
    assert hook.handler.report.tile_size == 8
    assert_matches_untiled(out, ref)


def test_overflowed_statistics_raise_a_clear_error():
    stats = GroupStats(2)
    stats.add(torch.tensor([1.0, float("inf"), 2.0, 3.0]).reshape(1, 4, 1, 1))
    with pytest.raises(FloatingPointError, match="bf16 or fp32"):
        stats.mean_rstd(1e-6)
