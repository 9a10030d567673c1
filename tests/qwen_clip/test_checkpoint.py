"""The header check names what a wrong text-encoder file is, before anything is loaded."""

import pytest
from quadtree_tile.qwen_clip import inspect_qwen_checkpoint
from qwen_clip_helpers import write_text_encoder


def test_complete_file_with_and_without_vision(tmp_path):
    full = inspect_qwen_checkpoint(str(write_text_encoder(tmp_path / "qwen_2.5_vl_7b.safetensors")))
    assert full.has_vision and full.layers == 28 and full.dtype == "BF16"
    text = inspect_qwen_checkpoint(str(write_text_encoder(tmp_path / "te.safetensors", vision="none")))
    assert not text.has_vision


def test_fp8_scaled_extras_are_accepted(tmp_path):
    extra = {"scaled_fp8": (0,), "model.layers.0.mlp.up_proj.scale_weight": (1,)}
    assert inspect_qwen_checkpoint(str(write_text_encoder(tmp_path / "fp8.safetensors", extra=extra))).has_vision


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(vision="partial"), r"partial vision tower: 192 of 390 visual\.\* tensors are missing"),
        (dict(kv=256), r"Qwen2\.5-3B \(the OmniGen2 text encoder\)"),
        (dict(kv=1024), "another size"),
        (dict(drop=("model.layers.27.mlp.down_proj.weight",)), "incomplete: 1 of the 338 language-model tensors"),
        (dict(layers=20), "incomplete: 96 of the 338"),
    ],
)
def test_wrong_qwen_files(tmp_path, kwargs, match):
    path = write_text_encoder(tmp_path / "te.safetensors", **kwargs)
    with pytest.raises(ValueError, match=match) as e:
        inspect_qwen_checkpoint(str(path))
    assert "te.safetensors" in str(e.value) and "qwen_2.5_vl_7b" in str(e.value)  # names the file and the remedy


def test_a_shard_is_called_a_shard(tmp_path):
    path = write_text_encoder(tmp_path / "model-00002-of-00004.safetensors", layers=10)
    with pytest.raises(ValueError, match="one shard of a sharded checkpoint"):
        inspect_qwen_checkpoint(str(path))


def _other_family(tmp_path, shapes, name="other.safetensors"):
    import torch
    from safetensors.torch import save_file

    if not isinstance(shapes, dict):
        shapes = {k: (2,) for k in shapes}
    path = tmp_path / name
    save_file({k: torch.zeros(s) for k, s in shapes.items()}, str(path))
    with pytest.raises(ValueError, match="not the Qwen2.5-VL-7B text encoder") as e:
        inspect_qwen_checkpoint(str(path))
    return str(e.value)


def test_other_families_are_named(tmp_path):
    assert "T5" in _other_family(tmp_path, ["encoder.block.0.layer.0.SelfAttention.k.weight"])
    assert "CLIP" in _other_family(tmp_path, ["text_model.encoder.layers.0.mlp.fc1.weight"])
    assert "Qwen3-VL" in _other_family(
        tmp_path, ["model.language_model.layers.0.self_attn.q_norm.weight", "model.visual.patch_embed.proj.weight"]
    )
    assert "Qwen3 language model" in _other_family(
        tmp_path, ["model.layers.0.self_attn.q_norm.weight", "model.layers.0.post_attention_layernorm.weight"]
    )
    assert "Llama-style" in _other_family(tmp_path, ["model.layers.0.post_attention_layernorm.weight"])
    assert "VAE" in _other_family(tmp_path, ["decoder.conv_in.weight", "encoder.conv_in.weight"])
    assert "diffusion model" in _other_family(tmp_path, ["transformer_blocks.0.attn.to_q.weight"])
    unknown = _other_family(tmp_path, ["lora_unet_blocks.weight", "lora_unet_blocks.alpha"])
    assert "not a Qwen2/2.5 text model (none of its 2 tensors" in unknown


def test_a_clip_text_encoder_is_called_one_not_a_qwen_of_another_size(tmp_path):
    # ComfyUI's clip_l layout: its attention has biases too, [768] wide (the case a user met: it was
    # called "a Qwen2-family model of another size")
    shapes = {
        f"text_model.encoder.layers.{i}.self_attn.{p}_proj.{t}": (768, 768) if t == "weight" else (768,)
        for i in range(2)
        for p in ("q", "k", "v")
        for t in ("weight", "bias")
    }
    shapes["text_model.embeddings.token_embedding.weight"] = (8, 768)
    message = _other_family(tmp_path, shapes, "clip_l.safetensors")
    assert message.startswith("clip_l.safetensors is a CLIP text encoder")
    assert "another size" not in message and "k_proj" not in message


def test_not_safetensors(tmp_path):
    pt = tmp_path / "qwen.pt"
    pt.write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match="only .safetensors"):
        inspect_qwen_checkpoint(str(pt))
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"PK\x03\x04 this is a zip file renamed")
    with pytest.raises(ValueError, match="not a valid .safetensors file"):
        inspect_qwen_checkpoint(str(fake))
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="too short"):
        inspect_qwen_checkpoint(str(short))


def test_truncated_download(tmp_path):
    path = write_text_encoder(tmp_path / "cut.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[:200])  # the header is cut off mid-way
    with pytest.raises(ValueError, match="cut.safetensors"):
        inspect_qwen_checkpoint(str(path))
