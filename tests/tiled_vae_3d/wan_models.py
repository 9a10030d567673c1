"""Small random-weight causal video VAEs of every supported layout, and the hosts' time loops.

``LAYOUTS`` maps a name to a builder returning a :class:`Pair`. The loops (:func:`decode_frames`,
:func:`encode_chunks`) call the decoder once per latent frame and the encoder on 1, 4, 4, ...
frame chunks with a shared ``feat_cache`` list, as ComfyUI's and diffusers' ``WanVAE`` do;
:func:`host_decode` / :func:`host_encode` call the whole VAE's own method (what a user calls).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKLQwenImage, AutoencoderKLWan
from mirrors import comfy_wan_vae as mirror
from quadtree_tile.benchmarks.common import Uniform, randomise_
from torch import nn


def randomise(module: nn.Module, seed: int = 1234) -> nn.Module:
    """Deterministic weights large enough that borders and caches matter (the pack's one randomiser)."""
    spread = lambda fan_in: (1.5 / fan_in) ** 0.5  # noqa: E731
    return randomise_(
        module, seed, matrices="normal", spread=spread, vectors=Uniform(0.5, 1.5), norm_scales=None, sort=False
    )


@dataclass
class Pair:
    """A whole VAE, its encoder and decoder, and what a test needs to feed them (``image_channels``:
    what the encoder itself takes; ``pixel_channels``: what the VAE's encode takes)."""

    name: str
    vae: nn.Module
    latent_channels: int
    image_channels: int
    family: str
    pixel_channels: int = 3

    @property
    def encoder(self) -> nn.Module:
        return self.vae.encoder

    @property
    def decoder(self) -> nn.Module:
        return self.vae.decoder


def host_decode(vae: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The VAE's own decode (diffusers' returns a DecoderOutput)."""
    out = vae.decode(z)
    return out if isinstance(out, torch.Tensor) else out.sample


def host_encode(vae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The VAE's own encode: ComfyUI's mean, diffusers' moments (mean and log variance)."""
    out = vae.encode(x)
    return out if isinstance(out, torch.Tensor) else out.latent_dist.parameters


def _cache_len(module: nn.Module) -> int:
    return sum(1 for m in module.modules() if isinstance(m, nn.Conv3d))


def decode_frames(decoder: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The hosts' decode loop: one decoder call per latent frame, ``first_chunk`` on the first when taken."""
    cache: list = [None] * _cache_len(decoder)
    takes_first = "first_chunk" in inspect.signature(type(decoder).forward).parameters
    frames = []
    for i in range(z.shape[2]):
        extra = {"first_chunk": True} if takes_first and i == 0 else {}
        frames.append(decoder(z[:, :, i : i + 1], feat_cache=cache, feat_idx=[0], **extra))
    return torch.cat(frames, 2)


def encode_chunks(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The hosts' encode loop: chunks of 1, 4, 4, ... frames with one cache list."""
    cache: list = [None] * _cache_len(encoder)
    chunks = [x[:, :, :1]] + [x[:, :, 1 + 4 * i : 5 + 4 * i] for i in range((x.shape[2] - 1) // 4)]
    return torch.cat([encoder(c, feat_cache=cache, feat_idx=[0]) for c in chunks], 2)


def comfy_wan21() -> Pair:
    vae = randomise(mirror.WanVAE(dim=8, z_dim=4))
    return Pair("comfyui-wan21", vae, 4, 3, "comfyui-wan21")


def comfy_wan22() -> Pair:
    vae = randomise(mirror.WanVAE22(dim=4, dec_dim=4, z_dim=4))
    return Pair("comfyui-wan22", vae, 4, 12, "comfyui-wan22")


def diffusers_wan21() -> Pair:
    vae = randomise(AutoencoderKLWan(base_dim=8, z_dim=4))
    return Pair("diffusers-wan21", vae, 4, 3, "diffusers-wan")


def diffusers_wan22() -> Pair:
    vae = randomise(
        AutoencoderKLWan(
            base_dim=4,
            decoder_base_dim=4,
            z_dim=4,
            is_residual=True,
            in_channels=12,
            out_channels=12,
            patch_size=2,
            temperal_downsample=[False, True, True],
        )
    )
    return Pair("diffusers-wan22", vae, 4, 12, "diffusers-wan")


def diffusers_qwen() -> Pair:
    vae = randomise(AutoencoderKLQwenImage(base_dim=8, z_dim=4))
    return Pair("diffusers-qwenimage", vae, 4, 3, "diffusers-wan")


LAYOUTS = {
    "comfyui-wan21": comfy_wan21,
    "comfyui-wan22": comfy_wan22,
    "diffusers-wan21": diffusers_wan21,
    "diffusers-wan22": diffusers_wan22,
    "diffusers-qwenimage": diffusers_qwen,
}


@contextmanager
def out_of_memory_above(conv: nn.Module, pixels: int) -> Iterator[None]:
    """A small GPU, simulated: ``conv`` raises torch's out-of-memory error on inputs of more than
    ``pixels`` pixels per frame, until the block ends."""
    real = conv.forward

    def limited(x, *args, **kwargs):
        if x.shape[-2] * x.shape[-1] > pixels:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(x, *args, **kwargs)

    conv.forward = limited
    try:
        yield
    finally:
        del conv.forward
