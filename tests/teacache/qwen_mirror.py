"""A small mirror of ComfyUI's Qwen-Image transformer (our own code, for the CPU tests).

Mirrors ``QwenImageTransformer2DModel`` in ``comfy/ldm/qwen_image/model.py``, ComfyUI 0.3.64
(commit a125cd84), attribute for attribute and call for call along the path TeaCache touches:
``forward`` runs the ``DIFFUSION_MODEL`` wrapper chain around ``_forward`` with the arguments
``(x, timestep, context, attention_mask, guidance, ref_latents, transformer_options)`` plus
``**kwargs`` (``control``); ``_forward`` patchifies ``x`` ``[B, C, 1, H, W]`` with ``process_img``
(padding to the patch size), appends reference-latent tokens, runs ``img_in``, ``txt_norm``/``txt_in``,
``temb = time_text_embed(timestep, hidden_states)``, then for every block either the
``patches_replace["dit"][("double_block", i)]`` entry (called with ``{"img", "txt", "vec", "pe",
"transformer_options"}`` and ``{"original_block": block_wrap}``, returning ``{"img", "txt"}``) or
the block itself (returning ``(txt, img)``), then the ``patches["double_block"]`` entries and the
ControlNet ``control["input"][i]`` in-place adds, then ``norm_out(hidden_states, temb)``,
``proj_out``, keeps the first ``num_embeds`` tokens and unpatchifies. Blocks have ``img_mod``
(SiLU + Linear to 6·dim, first half = shift/scale/gate for attention) and ``img_norm1`` (LayerNorm
without affine). Simplified: no rotary embedding (``pe`` is None) and a plain joint attention;
widths are tiny.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from comfy_mirror import WrapperExecutor, get_all_wrappers
from quadtree_tile.benchmarks.common import Normal, randomise_
from torch import nn


class TimestepEmbed(nn.Module):
    """``QwenTimestepProjEmbeddings``: sinusoidal projection of 1000·t, then Linear-SiLU-Linear."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(32, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, timestep: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        half = 16
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = timestep.float()[:, None] * 1000 * freqs[None]
        proj = torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(hidden_states.dtype)
        return self.linear_2(F.silu(self.linear_1(proj)))


class Block(nn.Module):
    """``QwenImageTransformerBlock``: modulated joint attention and MLP on both streams."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.img_mod = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.txt_mod = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.img_norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.img_norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.txt_norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.txt_norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv_img = nn.Linear(dim, 3 * dim)
        self.qkv_txt = nn.Linear(dim, 3 * dim)
        self.out_img = nn.Linear(dim, dim)
        self.out_txt = nn.Linear(dim, dim)
        self.img_mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(approximate="tanh"), nn.Linear(2 * dim, dim))
        self.txt_mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(approximate="tanh"), nn.Linear(2 * dim, dim))

    @staticmethod
    def _modulate(x: torch.Tensor, mod: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, scale, gate = torch.chunk(mod, 3, dim=-1)
        return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1)), gate.unsqueeze(1)

    def forward(self, hidden_states, encoder_hidden_states, encoder_hidden_states_mask, temb, image_rotary_emb=None,
                transformer_options=None):  # fmt: skip
        img_mod1, img_mod2 = self.img_mod(temb).chunk(2, dim=-1)
        txt_mod1, txt_mod2 = self.txt_mod(temb).chunk(2, dim=-1)
        img_m, img_g = self._modulate(self.img_norm1(hidden_states), img_mod1)
        txt_m, txt_g = self._modulate(self.txt_norm1(encoder_hidden_states), txt_mod1)
        n_txt = txt_m.shape[1]
        qkv = torch.cat([self.qkv_txt(txt_m), self.qkv_img(img_m)], dim=1)
        b, s, _ = qkv.shape
        q, k, v = qkv.view(b, s, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, -1)
        hidden_states = hidden_states + img_g * self.out_img(att[:, n_txt:])
        encoder_hidden_states = encoder_hidden_states + txt_g * self.out_txt(att[:, :n_txt])
        m, g = self._modulate(self.img_norm2(hidden_states), img_mod2)
        hidden_states = torch.addcmul(hidden_states, g, self.img_mlp(m))
        m, g = self._modulate(self.txt_norm2(encoder_hidden_states), txt_mod2)
        encoder_hidden_states = torch.addcmul(encoder_hidden_states, g, self.txt_mlp(m))
        return encoder_hidden_states, hidden_states


class LastLayer(nn.Module):
    """``LastLayer``: ``shift + norm(x) * (1 + scale)`` with ``(scale, shift)`` from ``linear(silu(temb))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale, shift = torch.chunk(self.linear(F.silu(temb)), 2, dim=1)
        return torch.addcmul(shift[:, None, :], self.norm(x), (1 + scale)[:, None, :])


class QwenImageMirror(nn.Module):
    """``QwenImageTransformer2DModel`` with tiny widths (latent channels 16, patch 2)."""

    def __init__(self, num_layers: int = 3, dim: int = 32, heads: int = 2, context_dim: int = 24) -> None:
        super().__init__()
        self.patch_size = 2
        self.out_channels = 16
        self.time_text_embed = TimestepEmbed(dim)
        self.txt_norm = nn.RMSNorm(context_dim, eps=1e-6)
        self.img_in = nn.Linear(64, dim)
        self.txt_in = nn.Linear(context_dim, dim)
        self.transformer_blocks = nn.ModuleList([Block(dim, heads) for _ in range(num_layers)])
        self.norm_out = LastLayer(dim)
        self.proj_out = nn.Linear(dim, 64)

    def process_img(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        p = self.patch_size
        pad_h, pad_w = (-x.shape[-2]) % p, (-x.shape[-1]) % p
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular") if pad_h or pad_w else x
        shape = tuple(x.shape)
        b, c, _, h, w = shape
        tokens = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)
        return tokens, shape

    def forward(self, x, timestep, context, attention_mask=None, guidance=None, ref_latents=None,
                transformer_options=None, **kwargs):  # fmt: skip
        transformer_options = {} if transformer_options is None else transformer_options
        return WrapperExecutor(self._forward, self, get_all_wrappers("diffusion_model", transformer_options)).execute(
            x, timestep, context, attention_mask, guidance, ref_latents, transformer_options, **kwargs
        )

    def _forward(self, x, timesteps, context, attention_mask=None, guidance=None, ref_latents=None,
                 transformer_options=None, control=None, **kwargs):  # fmt: skip
        transformer_options = {} if transformer_options is None else transformer_options
        hidden_states, orig_shape = self.process_img(x)
        num_embeds = hidden_states.shape[1]
        for ref in ref_latents or ():
            hidden_states = torch.cat([hidden_states, self.process_img(ref)[0]], dim=1)
        hidden_states = self.img_in(hidden_states)
        encoder_hidden_states = self.txt_in(self.txt_norm(context))
        temb = self.time_text_embed(timesteps, hidden_states)
        blocks_replace = transformer_options.get("patches_replace", {}).get("dit", {})
        patches = transformer_options.get("patches", {})
        for i, block in enumerate(self.transformer_blocks):
            if ("double_block", i) in blocks_replace:

                def block_wrap(args, block=block):
                    out = {}
                    out["txt"], out["img"] = block(
                        hidden_states=args["img"], encoder_hidden_states=args["txt"], encoder_hidden_states_mask=None,
                        temb=args["vec"], image_rotary_emb=args["pe"], transformer_options=args["transformer_options"],
                    )  # fmt: skip
                    return out

                out = blocks_replace[("double_block", i)](
                    {"img": hidden_states, "txt": encoder_hidden_states, "vec": temb, "pe": None,
                     "transformer_options": transformer_options},
                    {"original_block": block_wrap},
                )  # fmt: skip
                hidden_states, encoder_hidden_states = out["img"], out["txt"]
            else:
                encoder_hidden_states, hidden_states = block(
                    hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states,
                    encoder_hidden_states_mask=None, temb=temb, image_rotary_emb=None,
                    transformer_options=transformer_options,
                )  # fmt: skip
            for p in patches.get("double_block", ()):
                out = p({"img": hidden_states, "txt": encoder_hidden_states, "x": x, "block_index": i,
                         "transformer_options": transformer_options})  # fmt: skip
                hidden_states, encoder_hidden_states = out["img"], out["txt"]
            if control is not None:
                control_i = control.get("input")
                if i < len(control_i) and control_i[i] is not None:
                    add = control_i[i]
                    hidden_states[:, : add.shape[1]] += add
        return self.head(hidden_states, temb, num_embeds, orig_shape, x)

    def head(self, hidden_states, temb, num_embeds, orig_shape, x) -> torch.Tensor:
        """The tail of ``_forward`` after the block loop (norm_out, proj_out, unpatchify, crop)."""
        hidden_states = self.proj_out(self.norm_out(hidden_states, temb))
        b, c, t, h, w = orig_shape
        hidden_states = hidden_states[:, :num_embeds].view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return hidden_states.reshape(orig_shape)[:, :, :, : x.shape[-2], : x.shape[-1]]


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Deterministic weights large enough that the blocks matter: fan-in scaled normal matrices,
    small normal vectors (the pack's one randomiser)."""
    return randomise_(model, seed, matrices="normal", spread=1.0, vectors=Normal(0.1), norm_scales=None)
