"""Test helpers: the Qwen2.5 tokenizer, images, checkpoint headers.

The tokenizer is built with the ``tokenizers`` package (the engine transformers' Qwen2Tokenizer
runs on) from ``tests/data/qwen25_tokenizer`` (the vocab.json / merges.txt ComfyUI bundles, with
their licence) and Qwen2's pre-tokenizer settings, so it gives the ids ComfyUI's and diffusers'
tokenizer give.
"""

from __future__ import annotations

import json
import pathlib

import torch

TOKENIZER_DIR = pathlib.Path(__file__).resolve().parents[1] / "data" / "qwen25_tokenizer"

# Qwen2's pre-tokenizer split pattern (a property of the model's tokenizer, as published with it).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_TOKENIZER = None


class QwenTokenizer:
    """Callable like a transformers tokenizer: ``tok(text)["input_ids"]``."""

    def __init__(self, directory: pathlib.Path) -> None:
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
        from tokenizers.models import BPE

        tok = Tokenizer(BPE.from_file(str(directory / "vocab.json"), str(directory / "merges.txt")))
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        config = json.loads((directory / "tokenizer_config.json").read_text())
        added = sorted(config["added_tokens_decoder"].items(), key=lambda kv: int(kv[0]))
        tok.add_special_tokens([AddedToken(v["content"], special=True, normalized=False) for _, v in added])
        for i, v in added:
            assert tok.token_to_id(v["content"]) == int(i), "special token ids out of order"
        self._tok = tok

    def __call__(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": self._tok.encode(text).ids}

    def ids(self, text: str) -> list[int]:
        return self._tok.encode(text).ids


def qwen_tokenizer() -> QwenTokenizer:
    """The Qwen2.5 tokenizer of ``tests/data``, built once per session."""
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = QwenTokenizer(TOKENIZER_DIR)
    return _TOKENIZER


def image(width: int, height: int, seed: int = 0) -> torch.Tensor:
    """A ComfyUI IMAGE (1, H, W, 3) with 8-bit values k/255, as LoadImage makes them."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, height, width, 3), generator=g).float() / 255.0


def write_text_encoder(
    path: pathlib.Path,
    layers: int = 28,
    vision: str = "full",
    kv: int = 512,
    drop: tuple[str, ...] = (),
    extra: dict[str, tuple[int, ...]] | None = None,
) -> pathlib.Path:
    """A .safetensors with the key layout of ComfyUI's Qwen2.5-VL-7B text encoder and tiny tensors.

    Only names and a few shapes matter to the header check; ``k_proj.bias`` has the width that
    identifies the model size. ``vision`` is ``"full"``, ``"partial"`` or ``"none"``.
    """
    from quadtree_tile.qwen_clip.checkpoint import _LAYER_KEYS, _VISION_BLOCK_KEYS, _VISION_OTHER_KEYS
    from safetensors.torch import save_file

    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (4, 2), "model.norm.weight": (2,)}
    for i in range(layers):
        for k in _LAYER_KEYS:
            shapes[f"model.layers.{i}.{k}"] = (kv,) if k == "self_attn.k_proj.bias" else (2,)
    if vision != "none":
        blocks = 32 if vision == "full" else 16
        shapes.update({k: (2,) for k in _VISION_OTHER_KEYS})
        shapes.update({f"visual.blocks.{i}.{k}": (2,) for i in range(blocks) for k in _VISION_BLOCK_KEYS})
    shapes.update(extra or {})
    for k in drop:
        shapes.pop(k)
    save_file({k: torch.zeros(s, dtype=torch.bfloat16) for k, s in shapes.items()}, str(path))
    return path
