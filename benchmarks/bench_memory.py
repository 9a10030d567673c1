"""Device memory of tiled vs untiled VAE runs, counted tensor by tensor on the meta device (no GPU needed).

    python -m benchmarks.bench_memory                       # every case below, bf16, a few minutes on a CPU
    python -m benchmarks.bench_memory --cases sdxl:2048 wan:832x480x81

Nothing is computed: ``TensorMemory`` (benchmarks/tensor_memory.py) counts the bytes of every
tensor a run would hold on the GPU, which is ``torch.cuda.max_memory_allocated`` less convolution
workspaces and allocator rounding. These are counts for tests of growth, not GPU measurements: on an
H200 the pack's tiled runs of stills peaked 8-31x above them (tensor_memory.py has the figures); the
measured bars come from bench_vae_2d / bench_vae_3d on a GPU. Models are full size with the real
architectures: diffusers' ``AutoencoderKL`` with the SD/SDXL layout, ``AutoencoderKLWan`` at Wan 2.1
size (Qwen-Image's VAE is the same network on one frame). Per case, one JSON line each for: the
untiled run; ours at ``--tile`` px with the activation store on the CPU; and one untiled run on a
``--tile`` px tile, which is what ComfyUI's ``VAEDecodeTiled``/``VAEEncodeTiled`` hold per tile at
their defaults (512 px; 64 frames per temporal tile) before moving it off the GPU.

A case is ``sdxl:SIDE`` (2D decode), ``qwen:SIDE`` / ``qwen-encode:SIDE`` (one frame) or
``wan:WxHxF`` (video decode, F = 1 + 4k frames).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch

from .common import SDXL_CLASS_CONFIG, emit, host_run, load_pack, pack_run
from .tensor_memory import counted_peak_gib, on_meta

DEFAULT_CASES = [
    "sdxl:2048",
    "sdxl:4096",
    "qwen:1328",
    "qwen:2048",
    "qwen:3072",
    "qwen-encode:2048",
    "wan:832x480x81",
    "wan:1280x720x81",
]
COMFY_TEMPORAL_LATENTS = 16
"""Latent frames in one of ComfyUI's temporal tiles at the node default of 64 frames."""


def _sdxl() -> torch.nn.Module:
    from diffusers import AutoencoderKL

    return on_meta(lambda: AutoencoderKL(**SDXL_CLASS_CONFIG))


def _wan() -> torch.nn.Module:
    from diffusers import AutoencoderKLWan

    return on_meta(lambda: AutoencoderKLWan(base_dim=96, z_dim=16))


def _case(case: str, tile: int) -> tuple[torch.nn.Module, str, torch.Tensor, torch.Tensor]:
    """(whole VAE, role, full input, one ComfyUI tile's input) for a case."""
    kind, size = case.split(":")
    bf16 = {"device": "meta", "dtype": torch.bfloat16}
    lt = tile // 8
    if kind == "sdxl":
        side = int(size)
        z = torch.empty(1, 4, side // 8, side // 8, **bf16)
        return _sdxl(), "decode", z, torch.empty(1, 4, lt, lt, **bf16)
    if kind == "qwen":
        side = int(size)
        z = torch.empty(1, 16, 1, side // 8, side // 8, **bf16)
        return _wan(), "decode", z, torch.empty(1, 16, 1, lt, lt, **bf16)
    if kind == "qwen-encode":
        side = int(size)
        x = torch.empty(1, 3, 1, side, side, **bf16)
        return _wan(), "encode", x, torch.empty(1, 3, 1, tile, tile, **bf16)
    if kind == "wan":
        w, h, f = (int(v) for v in size.split("x"))
        z = torch.empty(1, 16, 1 + (f - 1) // 4, h // 8, w // 8, **bf16)
        one = torch.empty(1, 16, min(z.shape[2], COMFY_TEMPORAL_LATENTS), min(lt, h // 8), min(lt, w // 8), **bf16)
        return _wan(), "decode", z, one
    raise SystemExit(f"unknown case {case!r}: sdxl:SIDE, qwen:SIDE, qwen-encode:SIDE or wan:WxHxF")


def _count(fn: Callable[[], Any]) -> tuple[float, float]:
    """(peak GiB counted, seconds the count took)."""
    t0 = time.perf_counter()
    peak = counted_peak_gib(fn)
    return peak, time.perf_counter() - t0


def _run_case(tv: Any, case: str, args: argparse.Namespace) -> None:
    vae, role, x, one_tile = _case(case, args.tile)
    if not args.skip_untiled:
        peak, secs = _count(lambda: host_run(vae, role, x))
        emit(case=case, run="untiled", peak_gib_counted=round(peak, 3), count_seconds=round(secs, 1))
    cfg = tv.TilingConfig(tile_size=args.tile, planner="grid", mode="tiled", activation_store="cpu")
    reports: list[Any] = []

    def ours() -> None:
        reports.append(pack_run(vae, role, x, cfg)[1])

    peak, secs = _count(ours)
    emit(
        case=case,
        run=f"quadtree-tile {args.tile} px, CPU store",
        peak_gib_counted=round(peak, 3),
        tiles=len(reports[-1].plan),
        count_seconds=round(secs, 1),
    )
    peak, _ = _count(lambda: host_run(vae, role, one_tile))
    emit(case=case, run=f"one untiled {args.tile} px tile (ComfyUI tiled, per tile)", peak_gib_counted=round(peak, 3))


def run(args: argparse.Namespace) -> None:
    tv = load_pack().tiled_vae
    memory = "counted on the meta device, not measured on a GPU"
    emit(torch=torch.__version__, dtype="bfloat16", memory=memory, tile=args.tile)
    for case in args.cases:
        _run_case(tv, case, args)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=DEFAULT_CASES)
    p.add_argument("--tile", type=int, default=512, help="tile side in px (ours and ComfyUI's)")
    p.add_argument("--skip-untiled", action="store_true", help="leave out the untiled runs")
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
