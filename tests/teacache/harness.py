"""Build a mirrored Qwen-Image model and sample with it the way ComfyUI's KSampler does."""

from __future__ import annotations

from typing import Any

import torch
from comfy_mirror import CFGGuider, Cond, FlowModel, ModelPatcher, euler, flow_sigmas
from quadtree_tile.teacache import Rescale, TeaCacheConfig, apply_teacache
from qwen_mirror import QwenImageMirror, randomise


def make_patcher(num_layers: int = 3, seed: int = 0) -> ModelPatcher:
    return ModelPatcher(FlowModel(randomise(QwenImageMirror(num_layers=num_layers), seed=seed)))


def make_conds(n_pos: int = 1, batch: int = 1, txt_len: int = 5, seed: int = 1) -> tuple[list[Cond], list[Cond]]:
    g = torch.Generator().manual_seed(seed)
    pos = [Cond(torch.randn(batch, txt_len, 24, generator=g)) for _ in range(n_pos)]
    neg = [Cond(torch.randn(batch, txt_len, 24, generator=g))]
    return pos, neg


def teacache(patcher: ModelPatcher, threshold: float, **kw: Any) -> ModelPatcher:
    kw.setdefault("min_steps", 0)
    kw.setdefault("rescale", Rescale())
    return apply_teacache(patcher, TeaCacheConfig(threshold=threshold, **kw))


def sample(
    patcher: ModelPatcher,
    conds: tuple[list[Cond], list[Cond]],
    steps: int = 12,
    cfg: float = 4.0,
    batched: bool = True,
    batch: int = 1,
    size: int = 8,
    callback: Any = None,
    seed: int = 2,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run the mirrored KSampler; return the final latent and the denoised prediction of every step."""
    guider = CFGGuider(patcher, cfg=cfg, batched=batched)
    guider.set_conds(*conds)
    noise = torch.randn(batch, 16, 1, size, size, generator=torch.Generator().manual_seed(seed))
    per_step: list[torch.Tensor] = []

    def cb(i: int, denoised: torch.Tensor, x: torch.Tensor) -> None:
        per_step.append(denoised.clone())
        if callback is not None:
            callback(i, denoised, x)

    with torch.no_grad():
        out = guider.sample(noise, torch.zeros_like(noise), euler, flow_sigmas(steps), callback=cb)
    return out, per_step
