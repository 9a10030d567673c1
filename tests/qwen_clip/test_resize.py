"""Edit-image sizes per preset (golden values from each implementation's arithmetic) and the resampling."""

import numpy as np
import pytest
import torch
from PIL import Image
from quadtree_tile.qwen_clip import PRESETS, Mode, image_sizes, prepare_image, smart_resize
from quadtree_tile.qwen_clip.encode import prepare_encode
from qwen_clip_helpers import image

# input (w, h) -> sizes as (w, h); "grid" is the vision copy after the 28-px snap, "tok" its vision tokens.
GOLDEN = {
    # diffusers and DiffSynth, edit: VAE copy ~1024² /32, the vision tower sees the same image.
    ("diffusers", "edit"): {
        (1024, 1024): dict(vae=(1024, 1024), grid=(1036, 1036), tok=1369),
        (1920, 1080): dict(vae=(1376, 768), grid=(1372, 756), tok=1323),
        (1477, 2056): dict(vae=(864, 1216), grid=(868, 1204), tok=1333),
        (1317, 796): dict(vae=(1312, 800), grid=(1316, 812), tok=1363),
        (800, 600): dict(vae=(1184, 896), grid=(1176, 896), tok=1344),
    },
    # edit-plus: vision copy ~384² /32.
    ("diffusers", "edit-plus"): {
        (1024, 1024): dict(vae=(1024, 1024), vision=(384, 384), grid=(392, 392), tok=196),
        (1920, 1080): dict(vae=(1376, 768), vision=(512, 288), grid=(504, 280), tok=180),
        (1477, 2056): dict(vae=(864, 1216), vision=(320, 448), grid=(308, 448), tok=176),
        (1317, 796): dict(vae=(1312, 800), vision=(480, 288), grid=(476, 280), tok=170),
        (800, 600): dict(vae=(1184, 896), vision=(448, 320), grid=(448, 308), tok=176),
    },
    # ComfyUI, edit: round(side * scale), no snap; its VAE then centre-crops to multiples of 8.
    ("comfy", "edit"): {
        (1024, 1024): dict(vae=(1024, 1024), grid=(1036, 1036), tok=1369, latent=(128, 128)),
        (1920, 1080): dict(vae=(1365, 768), grid=(1372, 756), tok=1323, latent=(170, 96)),
        (1477, 2056): dict(vae=(868, 1208), grid=(868, 1204), tok=1333, latent=(108, 151)),
        (1317, 796): dict(vae=(1317, 796), grid=(1316, 784), tok=1316, latent=(164, 99)),
        (800, 600): dict(vae=(1182, 887), grid=(1176, 896), tok=1344, latent=(147, 110)),
    },
    # ComfyUI, edit-plus: vision copy round() at ~384², VAE copy /8 at ~1024².
    ("comfy", "edit-plus"): {
        (1024, 1024): dict(vae=(1024, 1024), vision=(384, 384), grid=(392, 392), tok=196),
        (1920, 1080): dict(vae=(1368, 768), vision=(512, 288), grid=(504, 280), tok=180),
        (1477, 2056): dict(vae=(864, 1208), vision=(325, 453), grid=(336, 448), tok=192),
        (1317, 796): dict(vae=(1320, 800), vision=(494, 299), grid=(504, 308), tok=198),
        (800, 600): dict(vae=(1184, 888), vision=(443, 333), grid=(448, 336), tok=192),
    },
}


@pytest.mark.parametrize("preset,mode", list(GOLDEN))
def test_golden_sizes(preset, mode):
    for (w, h), want in GOLDEN[(preset, mode)].items():
        p = image_sizes(PRESETS[preset], Mode(mode), w, h)
        got = dict(vae=p.vae, grid=p.vision_grid, tok=p.vision_tokens)
        if "vision" in want:
            got["vision"] = p.vision
        if "latent" in want:
            got["latent"] = p.latent
        assert got == want, (w, h)
        if mode == "edit":
            assert p.vision == p.vae  # the vision tower sees the VAE copy


def test_diffsynth_equals_diffusers_sizes_and_makes_the_plus_vision_copy_from_the_vae_copy():
    for w, h in GOLDEN[("diffusers", "edit-plus")]:
        ds, df = (image_sizes(PRESETS[n], Mode.EDIT_PLUS, w, h) for n in ("diffsynth", "diffusers"))
        assert (ds.vae, ds.vision, ds.vision_grid) == (df.vae, df.vision, df.vision_grid)
    # 3000x200: the 1024² copy (3968x256) has another aspect ratio than the input, so the chained
    # ~384² copy differs from one made from the original.
    ds, df = (image_sizes(PRESETS[n], Mode.EDIT_PLUS, 3000, 200) for n in ("diffsynth", "diffusers"))
    assert ds.vae == df.vae == (3968, 256)
    assert (ds.vision, df.vision) == ((1504, 96), (1472, 96))


def test_smart_resize_bounds():
    assert smart_resize(28, 28) == (56, 56)  # below 3136 px: scaled up
    # above 12845056 px: scaled down and floored to 28 (5000 / beta is 3583.99..., so 127 blocks, not 128)
    assert smart_resize(5000, 5000) == (3556, 3556)
    assert smart_resize(1000, 30) == (1008, 28)


def _exact_uint8(t):
    return torch.equal(t, torch.round(t * 255) / 255)


@pytest.mark.parametrize("preset", ["diffsynth", "diffusers"])
def test_pil_presets_resize_like_pil_and_pre_snap_the_vision_copy(preset):
    img = image(320, 200, seed=3)
    prepared = prepare_image(PRESETS[preset], Mode.EDIT_PLUS, img[0], with_vae=True)
    p = prepared.sizes
    assert prepared.vae.shape == (1, p.vae[1], p.vae[0], 3)
    assert prepared.vision.shape == (1, p.vision_grid[1], p.vision_grid[0], 3)  # ComfyUI's snap is then a no-op
    assert _exact_uint8(prepared.vae) and _exact_uint8(prepared.vision)
    filt = Image.Resampling.BICUBIC if preset == "diffsynth" else Image.Resampling.LANCZOS
    pil = Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8)).resize(p.vae, filt)
    assert torch.equal(prepared.vae[0], torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255))
    base = pil if preset == "diffsynth" else Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8))
    vision = base.resize(p.vision, filt).resize(p.vision_grid, Image.Resampling.BICUBIC)
    assert torch.equal(prepared.vision[0], torch.from_numpy(np.asarray(vision, dtype=np.float32) / 255))


def test_comfy_preset_uses_area_and_leaves_the_28_snap_to_comfyui():
    img = image(300, 200, seed=4)
    prepared = prepare_image(PRESETS["comfy"], Mode.EDIT_PLUS, img[0], with_vae=True)
    p = prepared.sizes
    assert prepared.vision.shape == (1, p.vision[1], p.vision[0], 3)
    want = torch.nn.functional.interpolate(img.movedim(-1, 1), size=(p.vae[1], p.vae[0]), mode="area")
    assert torch.equal(prepared.vae, want.movedim(1, -1))


def test_presets_differ_where_the_issue_says():
    img = image(200, 150, seed=5)
    out = {n: prepare_image(PRESETS[n], Mode.EDIT, img[0], with_vae=True) for n in PRESETS}
    assert out["diffsynth"].vae.shape == out["diffusers"].vae.shape
    assert not torch.equal(out["diffsynth"].vae, out["diffusers"].vae)  # bicubic vs Lanczos
    assert out["comfy"].vae.shape != out["diffusers"].vae.shape  # no /32 snap


def test_alpha_is_dropped():
    rgba = torch.cat([image(64, 64)[0], torch.ones(64, 64, 1)], dim=-1)
    for name in PRESETS:
        assert prepare_image(PRESETS[name], Mode.EDIT, rgba, with_vae=True).vae.shape[-1] == 3


@pytest.mark.parametrize(
    "size,match",
    [((1, 1), "at least 28 px"), ((27, 500), "at least 28 px"), ((40, 9000), "aspect ratio above 200")],
)
def test_unusable_image_sizes_are_refused(size, match):
    with pytest.raises(ValueError, match=match):
        prepare_encode("diffusers", "edit", "p", [("image1", image(*size))])


def test_bad_image_inputs_are_refused():
    with pytest.raises(ValueError, match="batch of 2"):
        prepare_encode("comfy", "edit", "p", [("image1", torch.rand(2, 64, 64, 3))])
    nan = image(64, 64)
    nan[0, 3, 3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        prepare_encode("comfy", "edit", "p", [("image1", nan)])
