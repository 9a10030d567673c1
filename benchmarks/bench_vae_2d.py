"""Tiled vs untiled 2D VAE (SD / SDXL architecture) decode and encode: time, peak device memory and error, side by side.

    python -m benchmarks.bench_vae_2d                              # CPU: small cases, fp32
    python -m benchmarks.bench_vae_2d --cases decode:2048 decode:4096   # a GPU: bf16 (the default there)
    COMFYUI_PATH=/path/to/ComfyUI python -m benchmarks.bench_vae_2d --comfy   # ComfyUI's VAE and tiled nodes

A case is ``decode:SIDE`` / ``encode:SIDE`` (or ``WxH``) in image pixels; on a GPU the defaults are
decode 2048² and 4096². Prints one JSON line per run (benchmarks/vae_runs.py says what the columns
mean). Without ``--comfy`` the model is diffusers' ``AutoencoderKL`` with random weights, compared
with diffusers' own ``enable_tiling``; with it, ComfyUI's own ``AutoencoderKL`` loaded through
``comfy.sd.VAE`` (only ``comfy.*`` is imported: run with a Python that has ComfyUI's requirements),
compared in ComfyUI's [0, 1] image space with what VAEDecodeTiled / VAEEncodeTiled do at their
defaults (512 px, overlap 64; a smaller ``--tile`` with a quarter-tile overlap).
"""

from __future__ import annotations

import torch

from . import comfy_host
from .common import sdxl_class_vae
from .vae_runs import Bench, Host, comfy_vae_host, diffusers_vae_host, main


def parse_case(case: str) -> tuple[str, tuple[int, int]]:
    """``decode:2048`` or ``encode:1024x768`` -> (role, (width, height)); sides multiples of 8."""
    role, _, size = case.partition(":")
    try:
        w, h = (int(v) for v in (size.split("x") if "x" in size else (size, size)))
    except ValueError:
        w = h = 0
    if role not in ("decode", "encode") or w <= 0 or h <= 0 or w % 8 or h % 8:
        raise SystemExit(f"bad case {case!r}: decode|encode:SIDE or decode|encode:WxH, sides multiples of 8")
    return role, (w, h)


def case_input(role: str, sizes: tuple[int, ...], comfy: bool) -> torch.Tensor:
    """The case's input, seeded by its size: a latent, or an image (ComfyUI's (B, H, W, C) in [0, 1])."""
    w, h = sizes
    g = torch.Generator().manual_seed(w * 7 + h)
    if role == "decode":
        return torch.randn(1, 4, h // 8, w // 8, generator=g)
    if comfy:
        return torch.rand(1, h, w, 3, generator=g)
    return torch.rand(1, 3, h, w, generator=g) * 2 - 1


def make_host(comfy: bool, device: torch.device, dtype: torch.dtype, tile: int) -> Host:
    """ComfyUI's SD VAE through ``comfy.sd.VAE``, or diffusers' ``AutoencoderKL``, with random weights."""
    if comfy:
        comfy_host.import_comfy(device)
        return comfy_vae_host(comfy_host.sd_model(), dtype, tile)
    return diffusers_vae_host(sdxl_class_vae(), device, dtype, tile)


BENCH = Bench(
    doc=__doc__,
    gpu_cases=["decode:2048", "decode:4096"],
    cpu_cases=["decode:192", "encode:192"],
    cpu_tile=96,
    parse=parse_case,
    make_input=case_input,
    make_host=make_host,
)

if __name__ == "__main__":
    main(BENCH)
