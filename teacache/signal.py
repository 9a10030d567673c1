"""The TeaCache signal for Qwen-Image: block 0's timestep-modulated input on the noisy image tokens."""

from __future__ import annotations

import torch


def modulated_input(block: torch.nn.Module, img: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
    """``img_norm1(img) * (1 + scale) + shift`` with ``(shift, scale)`` from ``block.img_mod(temb)``.

    This is the tensor a Qwen-Image transformer block feeds to its attention (ComfyUI's and
    diffusers' ``QwenImageTransformerBlock``: the first half of ``img_mod(temb)`` chunked into
    shift, scale, gate). It is computed with the block's own submodules, so weight casting and
    offloading behave as in the block. ``img`` is ``[B, tokens, dim]``, ``temb`` is ``[B, dim]``.
    """
    mod = block.img_mod(temb)
    shift, scale, _gate = mod[..., : mod.shape[-1] // 2].chunk(3, dim=-1)
    return block.img_norm1(img) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def rel_l1(current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """``mean|current - previous| / mean|previous|`` as a float32 scalar on the tensors' device."""
    num = torch.mean((current - previous).abs(), dtype=torch.float32)
    den = torch.mean(previous.abs(), dtype=torch.float32)
    return num / den.clamp_min(torch.finfo(torch.float32).tiny)
