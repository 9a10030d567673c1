"""Check a text-encoder file before ComfyUI builds a 7.6 B-parameter model from it.

Only the safetensors header is read (names, dtypes, shapes; no weights), so the check is instant
even for a 15 GB file. ComfyUI itself only *logs* missing weights and carries on with
uninitialised memory, which is how a file without the vision tower, a single shard of a sharded
checkpoint or the wrong model family ends in garbage images or a shape error deep in the encoder.
Here each of those gets an error that names the file, what it is and what to use instead.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass

QWEN_LAYERS = 28
QWEN_VISION_BLOCKS = 32
QWEN_KV_WIDTH = 512
"""Width of ``k_proj.bias`` in Qwen2.5-VL-7B (4 KV heads x 128); ComfyUI detects the model by it."""

_LAYER_KEYS = tuple(f"self_attn.{p}_proj.{t}" for p in ("q", "k", "v") for t in ("weight", "bias")) + (
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
)
_VISION_BLOCK_KEYS = (
    "norm1.weight",
    "norm2.weight",
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.proj.weight",
    "attn.proj.bias",
) + tuple(f"mlp.{p}_proj.{t}" for p in ("gate", "up", "down") for t in ("weight", "bias"))
_VISION_OTHER_KEYS = (
    "visual.patch_embed.proj.weight",
    "visual.merger.ln_q.weight",
    "visual.merger.mlp.0.weight",
    "visual.merger.mlp.0.bias",
    "visual.merger.mlp.2.weight",
    "visual.merger.mlp.2.bias",
)

SINGLE_FILE_HINT = (
    "Use the single-file Qwen2.5-VL-7B text encoder made for ComfyUI (qwen_2.5_vl_7b.safetensors or "
    "qwen_2.5_vl_7b_fp8_scaled.safetensors from Comfy-Org's Qwen-Image repackage), placed in "
    "models/text_encoders."
)


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors header."""

    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class TextEncoderInfo:
    """What a checked Qwen2.5-VL-7B file holds."""

    path: str
    layers: int
    has_vision: bool
    dtype: str
    """Storage dtype of the language model (``BF16``, ``F16``, ``F32``, ``F8_E4M3`` ...)."""


def read_header(path: str) -> dict[str, TensorEntry]:
    """Tensor names, dtypes and shapes of a .safetensors file, read without loading any weight."""
    name = os.path.basename(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{name} is {size} bytes long: too short to be a .safetensors file (truncated?).")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 512 * 1024 * 1024):
            raise ValueError(
                f"{name} is not a valid .safetensors file (its header claims {n} bytes); it may be truncated "
                "or another format renamed. Download it again."
            )
        try:
            raw = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{name} has a corrupt .safetensors header ({e}); download it again.") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{name} has a corrupt .safetensors header (not a JSON object); download it again.")
    return {
        k: TensorEntry(str(v.get("dtype")), tuple(v.get("shape", ())))
        for k, v in raw.items()
        if k != "__metadata__" and isinstance(v, dict)
    }


def _layer_numbers(keys: set[str], prefix: str) -> set[int]:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return {int(m.group(1)) for k in keys if (m := pat.match(k))}


_QWEN2_KV = re.compile(r"model\.layers\.\d+\.self_attn\.k_proj\.bias")
"""A Qwen2/2.5 language-model layer's key bias: the one key every Qwen2 text model has and no other
family in ComfyUI's layout does (Llama-style and Qwen3 models have no attention biases)."""


def _not_qwen2(keys: set[str], shard: bool) -> str | None:
    """What a file that is not a Qwen2/2.5 text model in ComfyUI's layout looks like; None when it is one.

    A shard of a sharded checkpoint may hold no language layer at all; it is passed on (None) so
    that the completeness check calls it a shard.
    """

    def has(fragment: str) -> bool:
        return any(fragment in k for k in keys)

    if has("model.language_model.") or any(k.startswith("model.visual.") for k in keys):
        kind = "Qwen3-VL" if has(".q_norm.") else "a Qwen-VL model"
        return (
            f"{kind} saved in the newer transformers layout (model.language_model.*), which ComfyUI's "
            "Qwen-Image encoder does not read"
        )
    if has(".q_norm.") and has("model.layers."):
        return "a Qwen3 language model (e.g. the Z-Image or Qwen3-VL text encoder)"
    if any(_QWEN2_KV.fullmatch(k) for k in keys):
        return None
    if has("encoder.block.") and has("SelfAttention"):
        return "a T5 text encoder (Flux, SD3, Wan, ...)"
    if has("text_model.encoder.layers.") or has("transformer.resblocks."):
        return "a CLIP text encoder (e.g. clip_l or clip_g of SD, SDXL, Flux)"
    if has("post_feedforward_layernorm"):
        return "a Gemma text encoder (Lumina 2)"
    if has("model.layers.") and not shard and 0 in _layer_numbers(keys, "model.layers."):
        return "a Llama-style text encoder without attention biases (HiDream, HunyuanVideo)"
    if has("transformer_blocks.") or has("img_in.") or has("double_blocks."):
        return "a diffusion model, not a text encoder (it belongs in models/diffusion_models)"
    if has("decoder.") and has("encoder."):
        return "a VAE, not a text encoder (it belongs in models/vae)"
    if shard:
        return None
    return (
        f"not a Qwen2/2.5 text model (none of its {len(keys)} tensors is a language-model layer "
        "model.layers.N.self_attn.k_proj.bias)"
    )


def _other_size(header: dict[str, TensorEntry]) -> str | None:
    """How a Qwen2/2.5 text model of another size than 7B differs; None when its key width is 7B's."""
    widths = {e.shape for k, e in header.items() if _QWEN2_KV.fullmatch(k)}
    wrong = sorted(w for w in widths if w != (QWEN_KV_WIDTH,))
    if not wrong:
        return None
    size = "Qwen2.5-3B (the OmniGen2 text encoder)" if wrong[0] == (256,) else "a Qwen2-family model of another size"
    return f"{size}: k_proj.bias is {list(wrong[0])} wide, Qwen2.5-VL-7B's is [{QWEN_KV_WIDTH}]"


def inspect_qwen_checkpoint(
    path: str, layers: int = QWEN_LAYERS, vision_blocks: int = QWEN_VISION_BLOCKS
) -> TextEncoderInfo:
    """Check that ``path`` is a complete ComfyUI-layout Qwen2.5-VL-7B text encoder; say what it is if not.

    In this order: is it a Qwen2/2.5 text model at all (else it names what the file looks like,
    e.g. a CLIP text encoder), is it the 7B size, are all its language layers there, and is its
    vision tower whole.

    ``layers`` is the language-model depth ComfyUI will build (28 unless a config override says
    otherwise). The vision tower (``visual.*``) is optional: without it text-to-image works and an
    edit encode is refused; a *partial* vision tower is an error.
    """
    name = os.path.basename(path)
    if not name.lower().endswith(".safetensors"):
        raise ValueError(f"{name}: only .safetensors text encoders are accepted (no pickle formats).")
    header = read_header(path)
    keys = set(header)
    shard = re.search(r"-\d+-of-\d+", name) is not None
    other = _not_qwen2(keys, shard) or _other_size(header)
    if other is not None:
        raise ValueError(f"{name} is {other}, not the Qwen2.5-VL-7B text encoder Qwen-Image needs. {SINGLE_FILE_HINT}")
    required = ["model.embed_tokens.weight", "model.norm.weight"] + [
        f"model.layers.{i}.{k}" for i in range(layers) for k in _LAYER_KEYS
    ]
    missing = [k for k in required if k not in keys]
    if missing:
        what = "one shard of a sharded checkpoint" if shard else "incomplete"
        raise ValueError(
            f"{name} is {what}: {len(missing)} of the {len(required)} language-model tensors of "
            f"Qwen2.5-VL-7B are missing (first: {missing[0]}). ComfyUI would fill them with uninitialised "
            f"memory. {SINGLE_FILE_HINT}"
        )
    vision = [k for k in keys if k.startswith("visual.")]
    if vision:
        wanted = list(_VISION_OTHER_KEYS) + [
            f"visual.blocks.{i}.{k}" for i in range(vision_blocks) for k in _VISION_BLOCK_KEYS
        ]
        gone = [k for k in wanted if k not in keys]
        if gone:
            raise ValueError(
                f"{name} has a partial vision tower: {len(gone)} of {len(wanted)} visual.* tensors are missing "
                f"(first: {gone[0]}). Edit encodes would run on uninitialised weights. {SINGLE_FILE_HINT}"
            )
    return TextEncoderInfo(path, layers, bool(vision), header["model.norm.weight"].dtype)
