"""A whole video VAE hooked with tiled(): its own decode and encode run tile-major and return what
the VAE returns untiled (fp32, max abs <= 1e-4), on every layout."""

import logging

import pytest
import torch
from exactness import assert_matches_untiled
from quadtree_tile.tiled_vae import TilingConfig, tiled
from wan_models import LAYOUTS, host_decode, host_encode, out_of_memory_above

PATCHED = {"comfyui-wan22", "diffusers-wan22"}
"""Layouts whose VAE folds 2x2 pixels into channels around the encoder and decoder (Wan 2.2)."""


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def pair(request):
    return LAYOUTS[request.param]()


def _tile(pair, image_px: int) -> int:
    """A tile of ``image_px`` image pixels in the module's own pixels (Wan 2.2 works at half size)."""
    return image_px // 2 if pair.name in PATCHED else image_px


@pytest.mark.parametrize(("batch", "frames"), [(2, 3), (1, 1)])
def test_decode_equals_the_vaes_own_decode(pair, batch, frames):
    """Three latent frames are nine video frames (three chunks); one is a still image."""
    z = torch.randn(batch, pair.latent_channels, frames, 7, 9)  # odd latent size: tiles split both axes
    with torch.no_grad():
        ref = host_decode(pair.vae, z)
        with tiled(pair.vae, TilingConfig(tile_size=_tile(pair, 32), mode="tiled")) as hook:
            out = host_decode(pair.vae, z)
    report = hook.handler.report
    assert report.tiled and report.family.startswith(pair.family)
    assert len({r.y0 for r in report.plan}) > 1 and len({r.x0 for r in report.plan}) > 1
    assert_matches_untiled(out, ref)
    assert "decode" not in pair.vae.__dict__ and "_decode" not in pair.vae.__dict__


@pytest.mark.parametrize(("batch", "frames"), [(2, 9), (1, 1)])
def test_encode_equals_the_vaes_own_encode(pair, batch, frames):
    """Nine frames are three chunks (1, 4, 4); the image is an odd multiple of the alignment (3 x 5)."""
    size = (48, 80) if pair.name in PATCHED else (24, 40)
    x = torch.randn(batch, pair.pixel_channels, frames, *size)
    with torch.no_grad():
        ref = host_encode(pair.vae, x)
        with tiled(pair.vae, TilingConfig(tile_size=_tile(pair, 16), mode="tiled")) as hook:
            out = host_encode(pair.vae, x)
    report = hook.handler.report
    assert report.tiled and len(report.plan) > 1
    assert_matches_untiled(out, ref)


def test_frames_that_do_not_fill_a_chunk_are_dropped_as_the_vae_drops_them(pair):
    x = torch.randn(1, pair.pixel_channels, 7, 48, 80)  # 1 + 4 + 2 frames: the last two are ignored
    with torch.no_grad():
        ref = host_encode(pair.vae, x)
        with tiled(pair.vae, TilingConfig(tile_size=_tile(pair, 16), mode="tiled")):
            out = host_encode(pair.vae, x)
    assert out.shape[2] == 2
    assert_matches_untiled(out, ref)


def test_the_run_logs_one_line_with_the_tile_and_the_halo(pair, caplog):
    z = torch.randn(1, pair.latent_channels, 2, 7, 9)
    hook = tiled(pair.vae, TilingConfig(tile_size=_tile(pair, 32), mode="tiled"))
    with torch.no_grad(), caplog.at_level(logging.INFO, "comfyui-quadtree-tile"), hook:
        host_decode(pair.vae, z)
    [record] = caplog.records
    report = hook.handler.report
    assert f"{len(report.plan)} tiles of up to {report.tile_size} px" in record.message
    assert f"halo {report.halo} px" in record.message and report.halo > 0


def test_the_halo_is_recomputed_sparingly_at_large_tiles():
    """Windows shrink stage by stage: at a tile of 16 latent px the body recomputes well under its halo's
    share of a fixed-halo tiler, (16 + 2 x halo)^2 / 16^2 - 1."""
    pair = LAYOUTS["comfyui-wan21"]()
    z = torch.randn(1, pair.latent_channels, 1, 32, 32)
    with torch.no_grad(), tiled(pair.vae, TilingConfig(tile_size=128, mode="tiled")) as hook:
        host_decode(pair.vae, z)
    report = hook.handler.report
    halo_latent = report.halo / 8
    fixed_halo = ((16 + 2 * halo_latent) / 16) ** 2 - 1
    assert 0 < report.halo_overhead < fixed_halo / 2


def test_progress_counts_every_tile_and_frame_up_to_the_total():
    pair = LAYOUTS["comfyui-wan21"]()
    z = torch.randn(1, pair.latent_channels, 3, 7, 9)
    seen = []
    hook = tiled(pair.vae, TilingConfig(tile_size=32, mode="tiled"), progress=lambda d, t: seen.append((d, t)))
    with torch.no_grad(), hook:
        host_decode(pair.vae, z)
    tiles = len(hook.handler.report.plan)
    total = 3 * (tiles + 1 + tiles)  # per frame: the tiles before the middle attention, it, the tiles after
    assert [d for d, _ in seen] == list(range(1, total + 1))
    assert seen[-1] == (total, total)


def test_an_interrupt_between_frames_stops_the_decode_and_removes_the_hook():
    pair = LAYOUTS["diffusers-wan21"]()
    z = torch.randn(1, pair.latent_channels, 3, 7, 9)
    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 5:  # inside the first tile, after its second frame
            raise KeyboardInterrupt("stopped by the user")

    hook = tiled(pair.vae, TilingConfig(tile_size=32, mode="tiled"), check_interrupt=interrupt)
    with pytest.raises(KeyboardInterrupt), torch.no_grad(), hook:
        host_decode(pair.vae, z)
    assert "_decode" not in pair.vae.__dict__ and "_encode" not in pair.vae.__dict__
    assert all(v is None for v in pair.vae._feat_map)  # the VAE's own cache is left as its decode leaves it
    with torch.no_grad():
        assert host_decode(pair.vae, z[:, :, :1]).shape == (1, 3, 1, 56, 72)


def test_out_of_memory_in_a_tile_halves_the_tile_and_stays_exact():
    pair = LAYOUTS["comfyui-wan21"]()
    z = torch.randn(1, pair.latent_channels, 2, 7, 9)
    with torch.no_grad():
        ref = host_decode(pair.vae, z)
    hook = tiled(pair.vae, TilingConfig(tile_size=64, mode="tiled"))
    with out_of_memory_above(pair.decoder.head[-1], 40 * 40), torch.no_grad(), hook:
        out = host_decode(pair.vae, z)
    assert hook.handler.report.retries == 1 and hook.handler.report.tile_size == 32
    assert_matches_untiled(out, ref)


def test_untiled_mode_calls_the_vaes_own_method_with_every_argument():
    pair = LAYOUTS["diffusers-qwenimage"]()
    z = torch.randn(1, pair.latent_channels, 1, 7, 9)
    with torch.no_grad():
        ref = pair.vae.decode(z, return_dict=False)[0]
        with tiled(pair.vae, TilingConfig(mode="untiled")) as hook:
            out = pair.vae.decode(z, return_dict=False)
    assert isinstance(out, tuple) and torch.equal(out[0], ref)
    assert not hook.handler.report.tiled and hook.handler.report.reason == "mode is 'untiled'"


def test_the_diffusers_return_conventions_are_kept():
    pair = LAYOUTS["diffusers-wan21"]()
    z = torch.randn(1, pair.latent_channels, 1, 7, 9)
    with torch.no_grad(), tiled(pair.vae, TilingConfig(tile_size=32, mode="tiled")):
        as_tuple = pair.vae.decode(z, return_dict=False)
        as_output = pair.vae.decode(z)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], as_output.sample)


def test_the_middle_attention_hands_the_fused_kernels_contiguous_rows(monkeypatch):
    """PyTorch's flash and memory-efficient attention take only tensors whose last dimension is
    contiguous; anything else falls back to the kernel that builds the whole score matrix."""
    pair = LAYOUTS["comfyui-wan21"]()
    real = torch.nn.functional.scaled_dot_product_attention
    strides = []

    def recording(q, k, v, *args, **kwargs):
        strides.append((q.stride(-1), k.stride(-1), v.stride(-1)))
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    with torch.no_grad(), tiled(pair.vae, TilingConfig(tile_size=32, mode="tiled")):
        host_decode(pair.vae, torch.randn(1, pair.latent_channels, 2, 7, 9))
    assert strides and set(strides) == {(1, 1, 1)}
