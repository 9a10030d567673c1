"""Quadtree VAE Decode / Encode / Tile Preview against a mirror of ComfyUI's VAE (see comfy_sd_mirror).

Bad input gets the pack's message on every path (tiled, auto and untiled) before ComfyUI's memory
estimate or model load runs; a run logs one line; the tiled result is the untiled one.
"""

from __future__ import annotations

import logging

import pytest
import torch
from comfy_sd_mirror import VAE, ModelManagement
from quadtree_tile.nodes.vae_nodes import QuadtreeTilePreview, QuadtreeVAEDecode, QuadtreeVAEEncode

MODES = ("auto", "tiled", "untiled")
TILING = {"tile_size": 64, "planner": "grid", "min_tile_size": 0, "activation_store": "auto"}


@pytest.fixture
def mm(monkeypatch):
    return ModelManagement().install(monkeypatch)


@pytest.fixture(scope="module")
def vaes():
    return {kind: VAE(kind) for kind in ("sd", "flux", "wan21", "wan22")}


def decode(vae, z, mode="auto", **settings):
    return QuadtreeVAEDecode().decode({"samples": z}, vae, **{**TILING, "mode": mode, **settings})[0]


def encode(vae, image, mode="auto", **settings):
    return QuadtreeVAEEncode().encode(image, vae, **{**TILING, "mode": mode, **settings})[0]["samples"]


def preview(vae, image, samples=None, **settings):
    s = {k: v for k, v in {**TILING, **settings}.items() if k in ("tile_size", "planner", "min_tile_size")}
    return QuadtreeTilePreview().preview(image, vae, samples=samples, **s)[0]


def _pack_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("comfyui-quadtree-tile")]


@pytest.mark.parametrize("mode", MODES)
def test_a_16_channel_latent_into_an_sd_vae(vaes, mm, mode):
    msg = r"the latent has 16 channels, but this SD1\.x/SDXL VAE takes 4-channel latents\. Connect the VAE of"
    with pytest.raises(ValueError, match=msg):
        decode(vaes["sd"], torch.zeros(1, 16, 8, 8), mode)
    with pytest.raises(ValueError, match=r"the latent has 4 channels, but this Flux/SD3 VAE takes 16-channel"):
        decode(vaes["flux"], torch.zeros(1, 4, 8, 8), mode)
    assert mm.loads == []  # refused before ComfyUI's memory estimate and model load


def test_the_tile_preview_says_the_same(vaes, mm):
    with pytest.raises(ValueError, match=r"the latent has 16 channels, but this SD1\.x/SDXL VAE takes 4"):
        preview(vaes["sd"], torch.rand(1, 64, 64, 3), {"samples": torch.zeros(1, 16, 8, 8)})


@pytest.mark.parametrize("mode", MODES)
def test_an_image_latent_into_a_video_vae(vaes, mm, mode):
    wan, z = vaes["wan21"], torch.zeros(1, 16, 8, 8)
    with pytest.raises(IndexError):  # what ComfyUI's own estimate does with it, if it ran first
        wan.memory_used_decode(z.shape, wan.vae_dtype)
    msg = (
        r"this Wan 2\.1 / Qwen-Image VAE decodes 5D video latents \(batch, channels, frames, height, width\), "
        r"but the latent is a 4D image latent \(1x16x8x8\)\. Decode the sampler's output"
    )
    with pytest.raises(ValueError, match=msg):
        decode(wan, z, mode)
    with pytest.raises(ValueError, match=msg):
        preview(wan, torch.rand(1, 64, 64, 3), {"samples": z})
    assert mm.loads == []


@pytest.mark.parametrize("mode", MODES)
def test_a_video_latent_into_an_image_vae(vaes, mm, mode):
    msg = r"this SD1\.x/SDXL VAE decodes 4D image latents .* but the latent is a 5D video latent \(1x4x2x8x8\)"
    with pytest.raises(ValueError, match=msg):
        decode(vaes["sd"], torch.zeros(1, 4, 2, 8, 8), mode)


@pytest.mark.parametrize("mode", MODES)
def test_nan_and_inf_are_refused_on_every_path(vaes, mm, mode):
    z = torch.zeros(1, 4, 8, 8)
    z[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="the latent contains NaN or infinite values, so the image would be broken"):
        decode(vaes["sd"], z, mode)
    image = torch.rand(1, 64, 64, 3)
    image[0, 5, 5, 0] = float("inf")
    with pytest.raises(ValueError, match="the image contains NaN or infinite pixel values"):
        encode(vaes["sd"], image, mode)
    assert mm.loads == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("size", "cropped"), [((1, 64), (0, 64)), ((300, 7), (296, 0))])
def test_a_too_small_image_names_its_size_and_the_cropped_size(vaes, mm, mode, size, cropped):
    (w, h), (cw, ch) = size, cropped
    msg = (
        rf"the image is {w}x{h} px; cropped to a multiple of 8 px, as ComfyUI does before this VAE, "
        rf"it would be {cw}x{ch} px"
    )
    image = torch.rand(1, h, w, 3)
    with pytest.raises(ValueError, match=msg):
        encode(vaes["sd"], image, mode)
    with pytest.raises(ValueError, match=msg):
        preview(vaes["sd"], image)
    assert mm.loads == []


def test_a_wan_22_image_must_cover_its_16_px_factor(vaes, mm):
    with pytest.raises(ValueError, match=r"it would be 0x16 px\. This Wan 2\.2 VAE needs at least 16x16 px"):
        encode(vaes["wan22"], torch.rand(1, 16, 12, 3), "untiled")


def test_an_image_that_is_not_rgb(vaes, mm):
    with pytest.raises(ValueError, match=r"not an RGB IMAGE .* got 1x64x64x1"):
        encode(vaes["sd"], torch.rand(1, 64, 64, 1))


def test_min_tile_size_above_tile_size_is_refused(vaes, mm):
    msg = r"min_tile_size \(512 px\) is larger than tile_size \(256 px\)"
    bad = {"tile_size": 256, "min_tile_size": 512, "planner": "quadtree"}
    with pytest.raises(ValueError, match=msg):
        decode(vaes["sd"], torch.zeros(1, 4, 8, 8), **bad)
    with pytest.raises(ValueError, match=msg):
        encode(vaes["sd"], torch.rand(1, 64, 64, 3), **bad)
    with pytest.raises(ValueError, match=msg):
        preview(vaes["sd"], torch.rand(1, 64, 64, 3), **bad)
    decode(vaes["sd"], torch.zeros(1, 4, 8, 8), tile_size=0, min_tile_size=512)  # automatic tile: no contradiction


@pytest.mark.parametrize(
    ("mode", "expect"),
    [("tiled", "tiled, 4 tiles of up to 64 px"), ("untiled", "untiled, mode is 'untiled'"), ("auto", "untiled")],
)
def test_one_log_line_per_run_and_the_result_is_the_untiled_one(vaes, mm, caplog, mode, expect):
    z = torch.randn(1, 4, 16, 16)
    reference = decode(vaes["sd"], z, "untiled")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="comfyui-quadtree-tile"):
        images = decode(vaes["sd"], z, mode)
    (line,) = _pack_lines(caplog)
    assert expect in line and "1 tiles" not in line
    assert images.shape == (1, 128, 128, 3)
    assert (images - reference).abs().max() <= 1e-5
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="comfyui-quadtree-tile"):
        encode(vaes["sd"], images, mode)
    (line,) = _pack_lines(caplog)
    assert expect in line


def test_a_video_decode_logs_one_line_not_one_per_frame(vaes, mm, caplog):
    z = torch.randn(1, 16, 3, 8, 8)
    reference = decode(vaes["wan21"], z, "untiled")
    for mode in MODES:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="comfyui-quadtree-tile"):
            frames = decode(vaes["wan21"], z, mode, tile_size=32)
        lines = _pack_lines(caplog)
        assert len(lines) == 1, (mode, lines)
        assert mode != "tiled" or "tiled, 4 tiles" in lines[0], lines
        assert frames.shape == (9, 64, 64, 3)
        assert (frames - reference).abs().max() <= 1e-5


def test_wan_22_encodes_rgb_images_it_patchifies_itself(vaes, mm):
    image = torch.rand(1, 32, 48, 3)
    untiled = encode(vaes["wan22"], image, "untiled")
    tiled = encode(vaes["wan22"], image, "tiled", tile_size=16)
    assert untiled.shape == (1, 4, 1, 2, 3)
    assert (tiled - untiled).abs().max() <= 1e-5
