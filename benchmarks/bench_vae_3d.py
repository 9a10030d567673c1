"""Tiled vs untiled causal video VAE (Wan 2.1 / Qwen-Image architecture) decode and encode, side by side.

    python -m benchmarks.bench_vae_3d                                   # CPU: small cases, fp32
    python -m benchmarks.bench_vae_3d --cases decode:1328x1328x1 decode:832x480x81   # a GPU: bf16
    COMFYUI_PATH=/path/to/ComfyUI python -m benchmarks.bench_vae_3d --comfy   # ComfyUI's WanVAE and tiled nodes

A case is ``decode:WxHxF`` (output width, height, frames) or ``encode:WxHxF`` (input), F = 1 + 4k.
On a GPU the default cases are the Qwen-Image stills (decode 1328², 2048², 3072², encode 2048²) and
the Wan 2.1 clips (decode 832x480x81 and 1280x720x81). Prints one JSON line per run
(benchmarks/vae_runs.py says what the columns mean). Without ``--comfy`` the model is diffusers'
``AutoencoderKLWan`` at Wan 2.1 size (96 base channels, 16 latent channels; Qwen-Image's VAE is the
same network) with random weights, compared with diffusers' own ``enable_tiling``. With ``--comfy``
it is ComfyUI's ``WanVAE`` through ``comfy.sd.VAE`` (only ``comfy.*`` is imported), compared in
ComfyUI's [0, 1] image space with what VAEDecodeTiled / VAEEncodeTiled do at their defaults
(512 px, overlap 64, 64 frames, overlap 8; a smaller ``--tile`` with a quarter-tile overlap).
"""

from __future__ import annotations

import torch

from . import comfy_host
from .common import randomise_
from .vae_runs import Bench, Host, comfy_vae_host, diffusers_vae_host, main


def parse_case(case: str) -> tuple[str, tuple[int, int, int]]:
    """``decode:832x480x81`` -> (role, (width, height, frames))."""
    role, _, size = case.partition(":")
    try:
        w, h, f = (int(v) for v in size.split("x"))
    except ValueError:
        w = h = f = 0
    if role not in ("decode", "encode") or w <= 0 or h <= 0 or w % 8 or h % 8 or f < 1 or (f - 1) % 4:
        raise SystemExit(f"bad case {case!r}: decode|encode:WxHxF, sides multiples of 8, frames 1 + 4k")
    return role, (w, h, f)


def case_input(role: str, sizes: tuple[int, ...], comfy: bool) -> torch.Tensor:
    """The case's input, seeded by its size: a 16-channel latent, or frames (ComfyUI's (F, H, W, C) in [0, 1])."""
    w, h, f = sizes
    g = torch.Generator().manual_seed(w * 7 + h * 3 + f)
    if role == "decode":
        return torch.randn(1, 16, 1 + (f - 1) // 4, h // 8, w // 8, generator=g)
    if comfy:
        return torch.rand(f, h, w, 3, generator=g)
    return torch.rand(1, 3, f, h, w, generator=g) * 2 - 1


def make_host(comfy: bool, device: torch.device, dtype: torch.dtype, tile: int) -> Host:
    """ComfyUI's Wan 2.1 VAE through ``comfy.sd.VAE``, or diffusers' ``AutoencoderKLWan``, with random weights."""
    if comfy:
        comfy_host.import_comfy(device)
        return comfy_vae_host(comfy_host.wan21_model(), dtype, tile)
    from diffusers import AutoencoderKLWan

    return diffusers_vae_host(randomise_(AutoencoderKLWan(base_dim=96, z_dim=16)), device, dtype, tile)


BENCH = Bench(
    doc=__doc__,
    gpu_cases=[  # cheapest first, so that a time limit cuts the costliest
        "decode:1328x1328x1",
        "decode:832x480x81",
        "decode:2048x2048x1",
        "encode:2048x2048x1",
        "decode:1280x720x81",
        "decode:3072x3072x1",
    ],
    cpu_cases=["decode:96x64x1", "decode:64x64x5", "encode:64x64x5"],
    cpu_tile=32,
    parse=parse_case,
    make_input=case_input,
    make_host=make_host,
)

if __name__ == "__main__":
    main(BENCH)
