"""Mirrors of the ComfyUI pieces the Qwen nodes touch, for tests without ComfyUI.

Our own code, reproducing ComfyUI 0.3.64 (commit a125cd84) attribute for attribute and call for
call where the nodes use them; the encoder's *numbers* are replaced by a traceable embedding (each
row says which token or image block it came from) so tests can see exactly what was kept:

* ``MirrorCLIP``: ``comfy.sd.CLIP`` (comfy/sd.py): ``tokenizer``, ``cond_stage_model``, ``clone()``
  sharing the encoder module, ``encode_from_tokens_scheduled(tokens)`` -> ``[[cond, {"pooled_output": None}]]``.
* ``MirrorQwenTokenizer``: ``comfy.text_encoders.qwen_image.QwenImageTokenizer`` (an ``SD1Tokenizer``
  with ``clip_name = clip = "qwen25_7b"``) holding ``Qwen25_7BVLITokenizer`` whose ``.tokenizer`` is
  the transformers Qwen2Tokenizer.
* ``MirrorQwenTEModel``: ``QwenImageTEModel.encode_token_weights`` (comfy/text_encoders/qwen_image.py):
  the drop at the second ``<|im_start|>`` (+3 when ``user``, ``\\n`` follow), image dicts expanded
  to one row per 28x28 block as ``process_qwen2vl_images`` (comfy/text_encoders/qwen_vl.py) sizes them.
* ``conditioning_set_values``: ``node_helpers.conditioning_set_values``.
* ``MirrorVAE``: ``comfy.sd.VAE.encode`` for the Wan 2.1 / Qwen-Image VAE: centre-crops the pixels to
  multiples of 8 (``vae_encode_crop_pixels``) and returns a ``(1, 16, 1, h/8, w/8)`` latent.
"""

from __future__ import annotations

import math
import types

import torch

WIDTH = 4


def _vl_grid(height: int, width: int) -> tuple[int, int]:
    # process_qwen2vl_images: round to 28 within [3136, 12845056] px
    f, lo, hi = 28, 3136, 12845056
    h, w = round(height / f) * f, round(width / f) * f
    if h * w > hi:
        beta = math.sqrt(height * width / hi)
        h, w = max(f, math.floor(height / beta / f) * f), max(f, math.floor(width / beta / f) * f)
    elif h * w < lo:
        beta = math.sqrt(lo / (height * width))
        h, w = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
    return h, w


class MirrorQwenTEModel(torch.nn.Module):
    """Rows: (token id, 0, 0, 0) for text; (-1 - image index, block, h, w) for each vision block."""

    def __init__(self, drops: bool = True) -> None:
        super().__init__()
        self.drops = drops
        self.seen_images: list[torch.Tensor] = []

    def reset_clip_options(self) -> None:
        pass

    def encode_token_weights(self, token_weight_pairs: dict) -> tuple:
        pairs = token_weight_pairs["qwen25_7b"][0]
        rows, k = [], 0
        for tok, _weight in pairs:
            if isinstance(tok, dict):
                assert tok["type"] == "image" and tok["original_type"] == "image"
                data = tok["data"]
                self.seen_images.append(data)
                h, w = _vl_grid(data.shape[1], data.shape[2])
                rows += [[-1.0 - k, float(j), float(h), float(w)] for j in range((h // 28) * (w // 28))]
                k += 1
            else:
                rows.append([float(tok), 0.0, 0.0, 0.0])
        out = torch.tensor(rows)[None]
        template_end, count = -1, 0
        for i, (tok, _) in enumerate(pairs):
            if not isinstance(tok, dict) and tok == 151644 and count < 2:
                template_end, count = i, count + 1
        if out.shape[1] > template_end + 3 and pairs[template_end + 1][0] == 872 and pairs[template_end + 2][0] == 198:
            template_end += 3
        if self.drops:
            out = out[:, template_end:]
        return out, None, {}


class _TextTokenizer:
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer


class MirrorQwenTokenizer:
    clip_name = "qwen25_7b"
    clip = "qwen25_7b"

    def __init__(self, tokenizer) -> None:
        self.qwen25_7b = _TextTokenizer(tokenizer)


class MirrorCLIP:
    def __init__(self, tokenizer, model: MirrorQwenTEModel | None = None) -> None:
        self.tokenizer = MirrorQwenTokenizer(tokenizer) if tokenizer is not None else types.SimpleNamespace()
        self.cond_stage_model = model if model is not None else MirrorQwenTEModel()
        self.tokenizer_options: dict = {}

    def clone(self) -> MirrorCLIP:
        n = MirrorCLIP.__new__(MirrorCLIP)
        n.tokenizer = self.tokenizer
        n.cond_stage_model = self.cond_stage_model
        n.tokenizer_options = self.tokenizer_options.copy()
        return n

    def encode_from_tokens_scheduled(self, tokens: dict) -> list:
        self.cond_stage_model.reset_clip_options()
        cond, pooled, extra = self.cond_stage_model.encode_token_weights(tokens)
        return [[cond, {"pooled_output": pooled, **extra}]]


def conditioning_set_values(conditioning, values={}, append=False):  # noqa: B006 - ComfyUI's signature
    c = []
    for t in conditioning:
        n = [t[0], t[1].copy()]
        for k in values:
            val = values[k]
            if append:
                old = n[1].get(k, None)
                if old is not None:
                    val = old + val
            n[1][k] = val
        c.append(n)
    return c


class MirrorVAE:
    latent_channels = 16

    def __init__(self) -> None:
        self.encoded: list[torch.Tensor] = []

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        h, w = pixels.shape[1] // 8 * 8, pixels.shape[2] // 8 * 8
        y, x = (pixels.shape[1] % 8) // 2, (pixels.shape[2] % 8) // 2
        pixels = pixels[:, y : y + h, x : x + w, :3]
        self.encoded.append(pixels)
        return torch.zeros(pixels.shape[0], 16, 1, h // 8, w // 8)
