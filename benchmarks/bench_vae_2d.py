"""Tiled vs untiled 2D VAE decode/encode: error, peak device memory and time, side by side.

    python -m benchmarks.bench_vae_2d                      # CPU: small sizes, fp32
    python -m benchmarks.bench_vae_2d --sizes 2048 4096    # on a GPU: bf16 by default
    COMFYUI_PATH=/path/to/ComfyUI python -m benchmarks.bench_vae_2d --comfy   # + ComfyUI's VAEDecodeTiled

Prints one JSON line per case. Without ``--comfy`` the model is diffusers' ``AutoencoderKL`` with
the SD/SDXL architecture and random weights; with it, ComfyUI's own ``AutoencoderKL`` loaded
through ``comfy.sd.VAE`` (run this with a Python that has ComfyUI's requirements), compared in
ComfyUI's [0, 1] image space, with ComfyUI's tiled decode at its node defaults (512 px, overlap 64).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import torch

from .common import device_and_dtype, emit, errors, load_pack, measure, randomise_, sdxl_class_vae


def _oom() -> tuple[type[BaseException], ...]:
    return (torch.OutOfMemoryError, RuntimeError)


def _comfy_vae(device: torch.device) -> Any:
    sys.path.insert(0, os.environ["COMFYUI_PATH"])
    if device.type == "cpu":
        from comfy.cli_args import args

        args.cpu = True
    # isort: off
    import utils.extra_config  # noqa: F401  (ComfyUI's own import order: before comfy.*)
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    # isort: on

    ddconfig = {
        "double_z": True,
        "z_channels": 4,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    model = randomise_(AutoencoderKL(ddconfig=ddconfig, embed_dim=4))
    return comfy.sd.VAE(sd={k: v.detach().clone() for k, v in model.state_dict().items()})


def run(args: argparse.Namespace) -> None:
    pack = load_pack()
    tv = pack.tiled_vae
    device, dtype = device_and_dtype(args.device, args.dtype)
    emit(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        torch=torch.__version__,
        dtype=str(dtype),
        tile=args.tile,
    )

    if args.comfy:
        vae = _comfy_vae(device)
        import nodes as comfy_nodes

        comfy_vae = pack.nodes.comfy_vae

        def untiled(z: torch.Tensor) -> torch.Tensor:
            return vae.decode(z)

        def ours(z: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, Any]:
            return comfy_vae.decode(vae, z, cfg)

        def comfy_tiled(z: torch.Tensor) -> torch.Tensor:
            return comfy_nodes.VAEDecodeTiled().decode(vae, {"samples": z}, 512, 64, 64, 8)[0]

        value_range = 1.0
    else:
        model = sdxl_class_vae().to(device, dtype)
        decoder = model.decoder
        comfy_tiled = None
        value_range = 2.0

        def untiled(z: torch.Tensor) -> torch.Tensor:
            return decoder(z.to(device, dtype))

        def ours(z: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, Any]:
            with tv.tiled(decoder, cfg) as hook:
                out = decoder(z.to(device, dtype))
            return out, hook.handler.report

    configs: list[tuple[str, Any]] = [
        (
            f"grid_{args.tile}_cpu_store",
            tv.TilingConfig(tile_size=args.tile, planner="grid", mode="tiled", activation_store="cpu"),
        ),
        (f"quadtree_{args.tile}_cpu_store", tv.TilingConfig(tile_size=args.tile, mode="tiled", activation_store="cpu")),
        ("auto", tv.TilingConfig(tile_size=0, mode="tiled", activation_store="auto")),
    ]
    for size in args.sizes:
        g = torch.Generator().manual_seed(size)
        z = torch.randn(1, 4, size // 8, size // 8, generator=g)
        case = f"decode_{size}"
        try:
            ref, t_ref, peak_ref = measure(lambda z=z: untiled(z), device)
            emit(case=case, run="untiled", seconds=round(t_ref, 3), peak_gib=peak_ref)
        except _oom() as e:
            emit(case=case, run="untiled", error=str(e).splitlines()[0][:120])
            ref = None
        for name, cfg in configs:
            holder: dict[str, Any] = {}

            def call(z=z, cfg=cfg, holder=holder) -> torch.Tensor:
                out, holder["report"] = ours(z, cfg)
                return out

            out, t, peak = measure(call, device)
            rep = holder["report"]
            row = dict(
                case=case,
                run=f"quadtree-tile {name}",
                seconds=round(t, 3),
                peak_gib=peak,
                tiles=len(rep.plan),
                tile_px=rep.tile_size,
                store=rep.store,
                halo_overhead=round(rep.halo_overhead, 4),
            )
            if ref is not None:
                row.update(errors(out, ref, value_range), time_ratio=round(t / t_ref, 3))
            emit(**row)
            del out
        if comfy_tiled is not None:
            out, t, peak = measure(lambda z=z: comfy_tiled(z), device)
            row = dict(case=case, run="comfyui VAEDecodeTiled 512/64", seconds=round(t, 3), peak_gib=peak)
            if ref is not None:
                row.update(errors(out, ref, value_range), time_ratio=round(t / t_ref, 3))
            emit(**row)
        del ref


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="output sides in px (multiples of 8)")
    p.add_argument("--tile", type=int, default=512, help="tile side in px for the fixed-tile runs")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None)
    p.add_argument("--comfy", action="store_true", help="use ComfyUI's VAE and its tiled decode (COMFYUI_PATH)")
    args = p.parse_args(argv)
    if args.sizes is None:
        args.sizes = [2048, 4096] if torch.cuda.is_available() else [512]
        if not torch.cuda.is_available():
            args.tile = min(args.tile, 256)
    if args.comfy and not os.environ.get("COMFYUI_PATH"):
        p.error("--comfy needs COMFYUI_PATH (a ComfyUI checkout)")
    run(args)


if __name__ == "__main__":
    main()
