"""The two nodes against mirrors of ComfyUI's CLIP, folder lookups and VAE (see qwen_clip_mirror)."""

import logging
import sys
import types

import pytest
import torch
from quadtree_tile.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from quadtree_tile.nodes.qwen_clip_nodes import NO_FILES, QwenImageTextEncode, QwenVLLoader
from qwen_clip_helpers import image, qwen_tokenizer, write_text_encoder
from qwen_clip_mirror import MirrorCLIP, MirrorQwenTEModel, MirrorVAE, conditioning_set_values

LOADER, ENCODE = "QuadtreeTile_QwenVLLoader", "QuadtreeTile_QwenImageTextEncode"


@pytest.fixture(scope="module")
def tok():
    return qwen_tokenizer()


@pytest.fixture
def comfy(monkeypatch, tmp_path, tok):
    """Fake ``folder_paths``, ``comfy.sd`` and ``node_helpers`` modules; the text_encoders dir and load calls."""
    folder = tmp_path / "text_encoders"
    folder.mkdir()
    calls = []

    fp = types.ModuleType("folder_paths")
    fp.get_filename_list = lambda name: sorted(p.name for p in folder.iterdir())
    fp.get_full_path = lambda name, f: str(folder / f) if (folder / f).is_file() else None
    fp.get_folder_paths = lambda name: [str(folder)] if name == "text_encoders" else [str(tmp_path / name)]

    sd = types.ModuleType("comfy.sd")
    sd.CLIPType = types.SimpleNamespace(QWEN_IMAGE=18)

    def load_clip(ckpt_paths, embedding_directory=None, clip_type=1, model_options={}):  # noqa: B006
        calls.append(dict(paths=ckpt_paths, clip_type=clip_type, model_options=model_options))
        return MirrorCLIP(tok)

    sd.load_clip = load_clip
    pkg = types.ModuleType("comfy")
    pkg.sd = sd
    helpers = types.ModuleType("node_helpers")
    helpers.conditioning_set_values = conditioning_set_values
    for name, mod in (("folder_paths", fp), ("comfy", pkg), ("comfy.sd", sd), ("node_helpers", helpers)):
        monkeypatch.setitem(sys.modules, name, mod)
    return types.SimpleNamespace(dir=folder, calls=calls)


def _encode(clip, prompt="make it blue", preset="diffusers", mode="edit", **kw):
    return QwenImageTextEncode().encode(clip, prompt, preset, mode, **kw)


def test_registered_with_tooltips_everywhere():
    assert NODE_DISPLAY_NAME_MAPPINGS[LOADER] == "Qwen2.5-VL Loader (Qwen-Image)"
    assert NODE_DISPLAY_NAME_MAPPINGS[ENCODE] == "Qwen-Image Text Encode"
    for cls in (NODE_CLASS_MAPPINGS[ENCODE],):
        spec = cls.INPUT_TYPES()
        inputs = {**spec["required"], **spec["optional"]}
        assert all(opts.get("tooltip") for _, opts in inputs.values())
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
        assert cls.CATEGORY == "quadtree_tile/qwen" and cls.DESCRIPTION


def test_loader_lists_safetensors_only_and_loads_as_qwen_image(comfy):
    assert QwenVLLoader.INPUT_TYPES()["required"]["clip_name"][0] == [NO_FILES]
    write_text_encoder(comfy.dir / "qwen_2.5_vl_7b.safetensors")
    (comfy.dir / "old.pt").write_bytes(b"x")
    spec = QwenVLLoader.INPUT_TYPES()["required"]
    assert spec["clip_name"][0] == ["qwen_2.5_vl_7b.safetensors"]
    assert all(opts.get("tooltip") for _, opts in spec.values())
    (clip,) = QwenVLLoader().load("qwen_2.5_vl_7b.safetensors", "cpu")
    call = comfy.calls[-1]
    assert call["paths"] == [str(comfy.dir / "qwen_2.5_vl_7b.safetensors")] and call["clip_type"] == 18
    assert call["model_options"]["load_device"] == torch.device("cpu")
    assert _encode(clip, image1=image(64, 64))[0]  # has a vision tower: edit is allowed


def test_loader_errors(comfy):
    with pytest.raises(FileNotFoundError, match="No .safetensors text encoder found in .*text_encoders"):
        QwenVLLoader().load(NO_FILES)
    with pytest.raises(FileNotFoundError, match="'gone.safetensors' is not in .*text_encoders"):
        QwenVLLoader().load("gone.safetensors")
    write_text_encoder(comfy.dir / "omnigen2_qwen25_3b.safetensors", kv=256)
    with pytest.raises(ValueError, match="Qwen2.5-3B"):
        QwenVLLoader().load("omnigen2_qwen25_3b.safetensors")
    assert comfy.calls == []  # nothing was built


def test_file_without_vision_tower_refuses_edit_but_not_text_to_image(comfy, caplog):
    write_text_encoder(comfy.dir / "text_only.safetensors", vision="none")
    with caplog.at_level(logging.WARNING):
        (clip,) = QwenVLLoader().load("text_only.safetensors")
    assert "no vision tower" in caplog.text
    cond, _ = _encode(clip, mode="text-to-image")
    assert cond[0][0].shape[1] > 0
    for c in (clip, clip.clone()):  # a LoRA-patched clone shares the encoder and the finding
        for mode in ("edit", "edit-plus"):
            with pytest.raises(ValueError, match=r"text_only.safetensors has no vision tower \(no visual\.\*"):
                _encode(c, mode=mode, image1=image(64, 64))
    assert clip.cond_stage_model.seen_images == []


def test_text_to_image_keeps_exactly_the_ids_after_the_drop(tok):
    clip = MirrorCLIP(tok)
    ((cond, extras),) = _encode(clip, prompt="a red cat", preset="comfy", mode="text-to-image")[0]
    ids = tok.ids("a red cat") + [151645, 198, 151644, 77091, 198]
    assert cond[0, :, 0].tolist() == ids and extras["pooled_output"] is None
    assert "drop 34" in _encode(clip, mode="text-to-image")[1]


@pytest.mark.parametrize("preset", ["diffsynth", "diffusers", "comfy"])
def test_edit_with_vae_attaches_reference_latents_of_the_preset_size(comfy, tok, preset):
    clip, vae = MirrorCLIP(tok), MirrorVAE()
    src = image(400, 300, seed=1)
    conditioning, info = _encode(clip, preset=preset, mode="edit", vae=vae, image1=src)
    cond, extras = conditioning[0]
    vision = clip.cond_stage_model.seen_images[0]
    want_vae = {"diffsynth": (1184, 896), "diffusers": (1184, 896), "comfy": (1182, 887)}[preset]
    (latent,) = extras["reference_latents"]
    assert latent.shape == (1, 16, 1, want_vae[1] // 8, want_vae[0] // 8)
    assert tuple(vae.encoded[0].shape) == (1, want_vae[1] // 8 * 8, want_vae[0] // 8 * 8, 3)
    if preset == "comfy":
        assert tuple(vision.shape) == (1, 887, 1182, 3)  # ComfyUI snaps this copy to 28 itself
    else:
        assert tuple(vision.shape) == (1, 896, 1176, 3)  # pre-snapped: ComfyUI's resize is a no-op
    blocks = (896 // 28) * (1176 // 28)
    assert cond[0, 0, 0] == 151652 and (cond[0, 1 : 1 + blocks, 0] == -1).all()  # vision block right after the drop
    assert cond[0, 1 + blocks, 0] == 151653
    assert f"({blocks} tokens)" in info and "reference latents: 1x16x1x" in info


def test_edit_plus_numbers_the_connected_images_in_slot_order(comfy, tok):
    clip, vae = MirrorCLIP(tok), MirrorVAE()
    a, b = image(300, 300, seed=1), image(500, 250, seed=2)
    conditioning, info = _encode(clip, mode="edit-plus", vae=vae, image2=a, image4=b)
    seen = clip.cond_stage_model.seen_images
    assert [tuple(s.shape[1:3]) for s in seen] == [(392, 392), (252, 532)]
    assert [tuple(e.shape[1:3]) for e in vae.encoded] == [(1024, 1024), (736, 1440)]
    assert "Picture 1 (image2)" in info and "Picture 2 (image4)" in info
    cond = conditioning[0][0][0, :, 0]
    first_block = (cond == -1).nonzero()[0].item()
    assert cond[first_block - 6 : first_block].tolist() == [24669, 220, 16, 25, 220, 151652]
    assert len(conditioning[0][1]["reference_latents"]) == 2


def test_a_host_that_does_not_drop_the_template_is_caught(tok):
    clip = MirrorCLIP(tok, MirrorQwenTEModel(drops=False))
    with pytest.raises(RuntimeError, match="returned 41 tokens where the prompt and images imply 7"):
        _encode(clip, prompt="a cat", mode="text-to-image")


def test_bad_input_gets_clear_errors(tok):
    clip = MirrorCLIP(tok)
    with pytest.raises(ValueError, match="needs an image to edit, and none is connected"):
        _encode(clip, mode="edit")
    with pytest.raises(ValueError, match="exactly one image; 2 are connected"):
        _encode(clip, mode="edit", image1=image(64, 64), image3=image(64, 64))
    with pytest.raises(ValueError, match="Text-to-image takes no images, but image2 is connected"):
        _encode(clip, mode="text-to-image", image2=image(64, 64))
    with pytest.raises(ValueError, match="image1 is 1x1 px"):
        _encode(clip, mode="edit-plus", image1=image(1, 1))
    with pytest.raises(ValueError, match="not a Qwen2.5-VL text encoder"):
        _encode(MirrorCLIP(None), mode="text-to-image")
    sdxl_vae = MirrorVAE()
    sdxl_vae.latent_channels = 4
    with pytest.raises(ValueError, match="4-channel latents"):
        _encode(clip, vae=sdxl_vae, image1=image(64, 64))
    assert clip.cond_stage_model.seen_images == []  # nothing reached the encoder


def test_empty_prompt_is_the_bare_template(tok):
    ((cond, _),) = _encode(MirrorCLIP(tok), prompt="", mode="text-to-image")[0]
    assert cond[0, :, 0].tolist() == [151645, 198, 151644, 77091, 198]
