"""The whole-VAE side of the causal video VAEs: what their own ``decode`` / ``encode`` do around
the chunk-by-chunk calls of the decoder and encoder, recognised by structure.

A host (ComfyUI's ``WanVAE`` of ``comfy/ldm/wan/vae.py`` and ``vae2_2.py``; diffusers'
``AutoencoderKLWan`` and ``AutoencoderKLQwenImage``) decodes by running a 1x1x1 convolution
(``conv2`` / ``post_quant_conv``) over the latent, then calling the decoder once per latent frame
with one shared time cache (``first_chunk=True`` on the first call when the decoder takes it), and
finishing with ``unpatchify`` (Wan 2.2) and a clamp (diffusers). It encodes by patchifying (Wan
2.2), calling the encoder on frame chunks of 1, 4, 4, ... (trailing frames that do not fill a chunk
are dropped) and a last 1x1x1 convolution (``conv1`` keeping the mean / ``quant_conv``). A
:class:`Host` holds exactly those steps, so the tile-major path can own the chunk loop and still
return what the host's own method returns. The patch functions are the host module's own
(``patchify`` / ``unpatchify`` beside the host class), so their channel order is the host's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..families import Family, Unsupported, detect
from ..families.wan_common import forward_params, is_causal_conv

Patch = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class Host:
    """A recognised video VAE and the steps of its own ``decode`` / ``encode`` around the chunk calls.

    ``decode_method`` / ``encode_method`` name the methods that hold the chunk loop (what a hook
    replaces); ``patch`` is the 2x2 pixel fold of Wan 2.2 (1: none); ``clamps`` says the host clamps
    its decode to [-1, 1]; ``diffusers`` selects diffusers' call and return conventions.
    """

    name: str
    vae: nn.Module
    decoder: nn.Module
    encoder: nn.Module
    decode_method: str
    encode_method: str
    patch: int
    clamps: bool
    diffusers: bool

    # --- families of the parts -------------------------------------------------------------
    def part(self, role: str) -> tuple[nn.Module, Family]:
        """The decoder (``role="decode"``) or encoder and its family."""
        module = self.decoder if role == "decode" else self.encoder
        family = detect(module)
        if family is None:  # detect_host checked both parts
            raise Unsupported(f"{type(module).__name__} is no longer a recognised {role}r")
        return module, family

    def first_chunk(self) -> bool:
        """True when the host passes ``first_chunk=True`` to the decoder's first call."""
        return "first_chunk" in forward_params(self.decoder)

    # --- calls -----------------------------------------------------------------------------
    def bind(self, role: str, args: tuple, kwargs: dict) -> torch.Tensor | None:
        """The input tensor of a call of the decode or encode method, or None when the call passes
        something the tile-major path does not reproduce."""
        if len(args) != 1 or not isinstance(args[0], torch.Tensor):
            return None
        allowed = {"return_dict"} if self.diffusers and role == "decode" else set()
        return args[0] if set(kwargs) <= allowed else None

    def wrap_decode(self, out: torch.Tensor, kwargs: dict) -> Any:
        """What the decode method returns for the decoded ``out`` (diffusers: DecoderOutput or a tuple)."""
        if not self.diffusers:
            return out
        if not kwargs.get("return_dict", True):
            return (out,)
        from diffusers.models.autoencoders.vae import DecoderOutput  # the host is diffusers': it is installed

        return DecoderOutput(sample=out)

    # --- the steps around the chunk loop -------------------------------------------------------
    def before_decode(self, z: torch.Tensor) -> torch.Tensor:
        """The 1x1x1 convolution the host runs over the whole latent before the decoder."""
        conv = self.vae.post_quant_conv if self.diffusers else self.vae.conv2
        return conv(z)

    def after_decode(self, out: torch.Tensor) -> torch.Tensor:
        """Unfold Wan 2.2's 2x2 patches; clamp where the host does."""
        if self.patch > 1:
            out = self._patch_fn("unpatchify")(out, self.patch)
        return torch.clamp(out, min=-1.0, max=1.0) if self.clamps else out

    def before_encode(self, x: torch.Tensor) -> torch.Tensor:
        """Fold Wan 2.2's 2x2 patches into channels."""
        return self._patch_fn("patchify")(x, self.patch) if self.patch > 1 else x

    def after_encode(self, out: torch.Tensor) -> torch.Tensor:
        """The host's last 1x1x1 convolution: ComfyUI keeps the mean, diffusers the moments."""
        if self.diffusers:
            return self.vae.quant_conv(out)
        return self.vae.conv1(out).chunk(2, dim=1)[0]

    def reset(self) -> None:
        """Leave the host's own cache state as its methods leave it (diffusers clear it after a call)."""
        clear = getattr(self.vae, "clear_cache", None)
        if callable(clear):
            clear()

    def _patch_fn(self, name: str) -> Patch:
        fn = getattr(sys.modules.get(type(self.vae).__module__), name, None)
        if not callable(fn):
            raise Unsupported(f"{type(self.vae).__name__}'s module has no {name} function")
        return fn

    # --- checks ------------------------------------------------------------------------------
    def input_channels(self, role: str) -> int:
        """Channels the host's method takes: the latent's for decode, the image's for encode."""
        module, family = self.part(role)
        program = family.build(module)
        return program.in_channels // (self.patch**2 if role == "encode" else 1)


def _one_by_one(conv: object) -> bool:
    return is_causal_conv(conv) and tuple(conv.kernel_size) == (1, 1, 1)


def detect_host(vae: nn.Module) -> Host | None:
    """The :class:`Host` for a ComfyUI or diffusers Wan-family VAE, recognised by structure, or None."""
    decoder, encoder = getattr(vae, "decoder", None), getattr(vae, "encoder", None)
    if not isinstance(decoder, nn.Module) or not isinstance(encoder, nn.Module):
        return None
    dec, enc = detect(decoder), detect(encoder)
    if dec is None or enc is None or dec.dims != 3 or enc.dims != 3:
        return None
    name = type(vae).__name__
    if dec.name.startswith("comfyui-") and _one_by_one(getattr(vae, "conv1", None)):
        if not _one_by_one(getattr(vae, "conv2", None)) or not callable(getattr(vae, "decode", None)):
            return None
        patch = 2 if dec.name.startswith("comfyui-wan22") else 1
        return Host(name, vae, decoder, encoder, "decode", "encode", patch, clamps=False, diffusers=False)
    if dec.name.startswith("diffusers-") and all(
        _one_by_one(getattr(vae, n, None)) for n in ("quant_conv", "post_quant_conv")
    ):
        if not callable(getattr(vae, "_decode", None)) or not callable(getattr(vae, "_encode", None)):
            return None
        patch = getattr(getattr(vae, "config", None), "patch_size", None) or 1
        return Host(name, vae, decoder, encoder, "_decode", "_encode", patch, clamps=True, diffusers=True)
    return None
