"""Mirror of the ComfyUI surface the VAE nodes touch, for tests that cannot import ComfyUI.

Mirrors, attribute for attribute (our own code, written from reading ComfyUI 0.3.64, commit a125cd84):

* ``comfy/sd.py`` ``VAE``: the attributes and methods ``nodes/comfy_vae.py`` reads for an SD-style
  (``AutoencoderKL``), a Wan 2.1 / Qwen-Image and a Wan 2.2 VAE: ``first_stage_model``,
  ``latent_channels``, ``latent_dim``, ``not_video``, ``crop_input``, ``downscale_ratio`` /
  ``upscale_ratio``, ``spacial_compression_encode/decode``, ``vae_encode_crop_pixels`` (centre crop
  to a multiple of the factor), ``process_input/output``, ``memory_used_encode/decode`` (with the
  same indexing as ComfyUI's: the video VAEs' estimates read ``shape[4]``, so a 4D latent raises
  ``IndexError`` there, as it does in ComfyUI), ``vae_dtype``, ``device``, ``output_device``,
  ``patcher``, ``disable_offload``, ``throw_exception_if_invalid``;
* ``comfy/ldm/models/autoencoder.py`` ``AutoencoderKL``: ``quant_conv`` / ``post_quant_conv`` around
  the encoder and decoder, the mean of the posterior as the latent;
* ``comfy.model_management``: ``load_models_gpu``, ``get_free_memory``,
  ``throw_exception_if_processing_interrupted``; ``comfy.utils.ProgressBar``.

The VAEs are small (reduced widths) with random weights; only their structure matters.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import torch
from mirrors import comfy_wan_vae
from mirrors.comfy_vae_2d import Decoder, Encoder, small_config
from quadtree_tile.benchmarks.common import Uniform, randomise_
from torch import nn


def _randomise(module: nn.Module) -> nn.Module:
    """Weights large enough that norms and borders matter (the pack's one randomiser)."""
    spread = lambda fan_in: (1.5 / fan_in) ** 0.5  # noqa: E731
    return randomise_(
        module, 1234, matrices="normal", spread=spread, vectors=Uniform(-0.5, 0.5), norm_scales=None, sort=False
    )


class AutoencoderKL(nn.Module):
    """Mirror of ComfyUI's ``AutoencoderKL``: 1x1 quant convs around the encoder and decoder."""

    def __init__(self, z_channels: int = 4) -> None:
        super().__init__()
        config = small_config(z_channels)
        self.encoder = Encoder(**config)
        self.decoder = Decoder(**config)
        self.quant_conv = nn.Conv2d(2 * z_channels, 2 * z_channels, 1)
        self.post_quant_conv = nn.Conv2d(z_channels, z_channels, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x)).chunk(2, dim=1)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))


def _video_ratios(factor: int) -> dict[str, Any]:
    return {
        "upscale_ratio": (lambda a: max(0, a * 4 - 3), factor, factor),
        "downscale_ratio": (lambda a: max(0, (a + 3) // 4), factor, factor),
    }


class VAE:
    """Mirror of ``comfy.sd.VAE`` for ``kind`` ``sd`` (4 channels), ``flux`` (16 channels, 2D),
    ``wan21`` (16 channels, 5D latents, 8x) or ``wan22`` (patchified 2x2, 16x)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.vae_dtype = torch.float32
        self.device = self.output_device = torch.device("cpu")
        self.patcher = object()
        self.disable_offload = False
        self.crop_input = True
        self.not_video = False
        self.process_input = lambda image: image * 2.0 - 1.0
        self.process_output = lambda image: torch.clamp((image + 1.0) / 2.0, min=0.0, max=1.0)
        if kind in ("sd", "flux"):
            self.latent_channels, self.latent_dim = (4 if kind == "sd" else 16), 2
            self.first_stage_model = _randomise(AutoencoderKL(self.latent_channels))
            self.downscale_ratio = self.upscale_ratio = 8
            self.memory_used_encode = lambda shape, dtype: 1800 * shape[2] * shape[3] * 4
            self.memory_used_decode = lambda shape, dtype: 2200 * shape[2] * shape[3] * 64 * 4
        elif kind == "wan21":
            self.latent_channels, self.latent_dim = 16, 3
            self.first_stage_model = _randomise(comfy_wan_vae.WanVAE(dim=8, z_dim=16))
            self.__dict__.update(_video_ratios(8))
            self.memory_used_encode = lambda shape, dtype: 1000 * shape[2] * shape[3] * shape[4] * 4
            self.memory_used_decode = lambda shape, dtype: 1500 * shape[2] * shape[3] * shape[4] * 256 * 4
        elif kind == "wan22":
            self.latent_channels, self.latent_dim = 4, 3
            self.first_stage_model = _randomise(comfy_wan_vae.WanVAE22(dim=4, dec_dim=4, z_dim=4))
            self.__dict__.update(_video_ratios(16))
            self.memory_used_encode = lambda shape, dtype: 3300 * shape[3] * shape[4] * 4
            self.memory_used_decode = lambda shape, dtype: 8000 * shape[3] * shape[4] * 256 * 4
        else:
            raise ValueError(kind)

    def throw_exception_if_invalid(self) -> None:
        if self.first_stage_model is None:
            raise RuntimeError("ERROR: VAE is invalid: None")

    def spacial_compression_decode(self) -> int:
        r = self.upscale_ratio
        return r[-1] if isinstance(r, tuple) else r

    def spacial_compression_encode(self) -> int:
        r = self.downscale_ratio
        return r[-1] if isinstance(r, tuple) else r

    def vae_encode_crop_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Centre-crop every spatial side of (B, H, W, C) images to a multiple of the factor."""
        if not self.crop_input:
            return pixels
        factor = self.spacial_compression_encode()
        for d in range(1, pixels.ndim - 1):
            keep = pixels.shape[d] // factor * factor
            if keep != pixels.shape[d]:
                pixels = pixels.narrow(d, (pixels.shape[d] % factor) // 2, keep)
        return pixels


class ModelManagement:
    """``comfy.model_management`` and ``comfy.utils`` as the nodes call them; records every call."""

    def __init__(self, free: int | None = 1 << 40) -> None:
        self.free = free
        self.loads: list[float] = []
        self.progress: list[tuple[int, int]] = []

    def install(self, monkeypatch: Any) -> ModelManagement:
        mm = types.ModuleType("comfy.model_management")
        mm.load_models_gpu = lambda models, memory_required=0, force_full_load=False: self.loads.append(memory_required)
        mm.get_free_memory = lambda dev=None, torch_free_too=False: self.free
        mm.throw_exception_if_processing_interrupted = lambda: None
        utils = types.ModuleType("comfy.utils")
        owner = self

        class ProgressBar:
            def __init__(self, total: int, node_id: str | None = None) -> None:
                self.total = total

            def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
                owner.progress.append((value, total or self.total))

        utils.ProgressBar = ProgressBar
        pkg = types.ModuleType("comfy")
        pkg.model_management, pkg.utils = mm, utils
        for name, module in (("comfy", pkg), ("comfy.model_management", mm), ("comfy.utils", utils)):
            monkeypatch.setitem(sys.modules, name, module)
        return self
