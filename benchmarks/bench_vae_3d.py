"""Tiled vs untiled causal video VAE (Wan 2.1 / Qwen-Image architecture) decode and encode, side by side.

    python -m benchmarks.bench_vae_3d                                   # CPU: small cases, fp32
    python -m benchmarks.bench_vae_3d --cases decode:1328x1328x1 decode:2048x2048x1 \\
        decode:3072x3072x1 encode:2048x2048x1 decode:832x480x81 decode:1280x720x81   # a GPU: bf16
    COMFYUI_PATH=/path/to/ComfyUI python -m benchmarks.bench_vae_3d --comfy   # ComfyUI's VAE + VAEDecodeTiled

A case is ``decode:WxHxF`` (output width, height, frames) or ``encode:WxHxF`` (input). Prints one
JSON line per run. Without ``--comfy`` the model is diffusers' ``AutoencoderKLWan`` at Wan 2.1 size
(96 base channels, 16 latent channels; Qwen-Image's VAE has the same architecture) with random
weights, and the comparison is diffusers' own ``enable_tiling``. With ``--comfy`` it is ComfyUI's
``WanVAE`` loaded through ``comfy.sd.VAE``, compared in ComfyUI's [0, 1] image space with
``VAEDecodeTiled`` / ``VAEEncodeTiled`` at their node defaults (512 px, overlap 64, 64 frames,
overlap 8). PSNR and max abs are against the untiled run of the same dtype.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

import torch

from .common import device_and_dtype, emit, errors, load_pack, measure, randomise_


def _oom() -> tuple[type[BaseException], ...]:
    return (torch.OutOfMemoryError, RuntimeError)


def _parse(case: str) -> tuple[str, int, int, int]:
    kind, size = case.split(":")
    w, h, f = (int(v) for v in size.split("x"))
    if kind not in ("decode", "encode") or w % 8 or h % 8 or (f - 1) % 4:
        raise SystemExit(f"bad case {case!r}: decode|encode:WxHxF, sides multiples of 8, frames 1 + 4k")
    return kind, w, h, f


class _Diffusers:
    """diffusers ``AutoencoderKLWan`` (Wan 2.1 size); comparison: its ``enable_tiling``."""

    value_range = 2.0
    other_name = "diffusers enable_tiling"

    def __init__(self, device: torch.device, dtype: torch.dtype, tv: Any) -> None:
        from diffusers import AutoencoderKLWan

        self.vae = randomise_(AutoencoderKLWan(base_dim=96, z_dim=16)).to(device, dtype)
        self.device, self.dtype, self.tv = device, dtype, tv

    def untiled(self, kind: str, x: torch.Tensor) -> torch.Tensor:
        self.vae.use_tiling = False
        x = x.to(self.device, self.dtype)
        return self.vae.decode(x).sample if kind == "decode" else self.vae.encode(x).latent_dist.mode()

    def ours(self, kind: str, x: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, Any]:
        module = self.vae.decoder if kind == "decode" else self.vae.encoder
        with self.tv.tiled(module, cfg) as hook:
            out = self.untiled(kind, x)
        return out, hook.handler.report

    def other(self, kind: str, x: torch.Tensor) -> torch.Tensor:
        self.vae.enable_tiling()
        try:
            x = x.to(self.device, self.dtype)
            return self.vae.decode(x).sample if kind == "decode" else self.vae.encode(x).latent_dist.mode()
        finally:
            self.vae.use_tiling = False


class _Comfy:
    """ComfyUI's ``WanVAE`` through ``comfy.sd.VAE``; comparison: ``VAEDecodeTiled`` / ``VAEEncodeTiled``."""

    value_range = 1.0
    other_name = "comfyui VAEDecodeTiled/VAEEncodeTiled 512/64/64/8"

    def __init__(self, device: torch.device, dtype: torch.dtype, tv: Any, pack: Any) -> None:
        sys.path.insert(0, os.environ["COMFYUI_PATH"])
        from comfy.cli_args import args

        if device.type == "cpu":
            args.cpu = True
        # isort: off
        import utils.extra_config  # noqa: F401  (ComfyUI's own import order: before comfy.*)
        import comfy.sd
        import nodes as comfy_nodes
        from comfy.ldm.wan.vae import WanVAE

        # isort: on
        model = randomise_(WanVAE(dim=96, z_dim=16))
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.vae = comfy.sd.VAE(sd=sd, dtype=dtype)
        self.nodes, self.tv, self.comfy_vae = comfy_nodes, tv, pack.nodes.comfy_vae

    @staticmethod
    def _frames(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, *x.shape[-3:]) if x.ndim == 5 else x

    def untiled(self, kind: str, x: torch.Tensor) -> torch.Tensor:
        if kind == "decode":
            return self._frames(self.nodes.VAEDecode().decode(self.vae, {"samples": x})[0])
        return self.nodes.VAEEncode().encode(self.vae, x)[0]["samples"]

    def ours(self, kind: str, x: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, Any]:
        if kind == "decode":
            out, report = self.comfy_vae.decode(self.vae, x, cfg)
            return self._frames(out), report
        return self.comfy_vae.encode(self.vae, x, cfg)

    def other(self, kind: str, x: torch.Tensor) -> torch.Tensor:
        if kind == "decode":
            return self._frames(self.nodes.VAEDecodeTiled().decode(self.vae, {"samples": x}, 512, 64, 64, 8)[0])
        return self.nodes.VAEEncodeTiled().encode(self.vae, x, 512, 64, 64, 8)[0]["samples"]


def _input(kind: str, w: int, h: int, f: int, comfy: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(w * 7 + h * 3 + f)
    if kind == "decode":
        return torch.randn(1, 16, 1 + (f - 1) // 4, h // 8, w // 8, generator=g)
    if comfy:  # ComfyUI images: frames, H, W, C in [0, 1]
        return torch.rand(f, h, w, 3, generator=g)
    return torch.rand(1, 3, f, h, w, generator=g) * 2 - 1


def run(args: argparse.Namespace) -> None:
    pack = load_pack()
    tv = pack.tiled_vae
    device, dtype = device_and_dtype(args.device, args.dtype)
    model = _Comfy(device, dtype, tv, pack) if args.comfy else _Diffusers(device, dtype, tv)
    emit(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        torch=torch.__version__,
        dtype=str(dtype),
        model="comfyui WanVAE" if args.comfy else "diffusers AutoencoderKLWan",
        tile=args.tile,
    )
    configs = [
        (f"grid_{args.tile}", tv.TilingConfig(tile_size=args.tile, mode="tiled")),
        (f"grid_{args.tile}_cpu_store", tv.TilingConfig(tile_size=args.tile, mode="tiled", activation_store="cpu")),
        ("auto", tv.TilingConfig(tile_size=0, mode="auto")),
    ]
    for case in args.cases:
        kind, w, h, f = _parse(case)
        x = _input(kind, w, h, f, args.comfy)
        ref = None
        try:
            ref, t_ref, peak = measure(lambda x=x, kind=kind: model.untiled(kind, x), device)
            emit(case=case, run="untiled", seconds=round(t_ref, 3), peak_gib=peak)
        except _oom() as e:
            emit(case=case, run="untiled", error=str(e).splitlines()[0][:160])
        runs: list[tuple[str, Callable[[], torch.Tensor], dict]] = []
        for name, cfg in configs:
            holder: dict[str, Any] = {}

            def call(x=x, kind=kind, cfg=cfg, holder=holder) -> torch.Tensor:
                out, holder["report"] = model.ours(kind, x, cfg)
                return out

            runs.append((f"quadtree-tile {name}", call, holder))
        if not args.no_other:
            runs.append((model.other_name, lambda x=x, kind=kind: model.other(kind, x), {}))
        for name, fn, holder in runs:
            try:
                out, t, peak = measure(fn, device)
            except _oom() as e:
                emit(case=case, run=name, error=str(e).splitlines()[0][:160])
                continue
            row: dict[str, Any] = dict(case=case, run=name, seconds=round(t, 3), peak_gib=peak)
            rep = holder.get("report")
            if rep is not None:
                row.update(tiled=rep.tiled, tiles=len(rep.plan), tile_px=rep.tile_size, store=rep.store)
            if ref is not None:
                row.update(errors(out, ref, model.value_range), time_ratio=round(t / t_ref, 3))
            emit(**row)
            del out
        del ref


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=None, help="decode:WxHxF or encode:WxHxF")
    p.add_argument("--tile", type=int, default=512, help="tile side in px for the fixed-tile runs")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None)
    p.add_argument("--comfy", action="store_true", help="use ComfyUI's WanVAE and tiled nodes (COMFYUI_PATH)")
    p.add_argument("--no-other", action="store_true", help="skip the comparison tiler")
    args = p.parse_args(argv)
    if args.cases is None:
        if torch.cuda.is_available():
            args.cases = [
                "decode:1328x1328x1",
                "decode:2048x2048x1",
                "decode:3072x3072x1",
                "encode:2048x2048x1",
                "decode:832x480x81",
                "decode:1280x720x81",
            ]
        else:
            args.cases = ["decode:256x192x1", "decode:192x128x9", "encode:256x192x1"]
            args.tile = min(args.tile, 128)
    if args.comfy and not os.environ.get("COMFYUI_PATH"):
        p.error("--comfy needs COMFYUI_PATH (a ComfyUI checkout)")
    run(args)


if __name__ == "__main__":
    main()
