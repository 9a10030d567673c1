"""The pack's main job on a built-in default: decode a latent tiled and untiled and compare.

    python -m benchmarks.demo [--latent 48 64] [--tile 128] [--out out/]

Builds a real-architecture SD/SDXL VAE (diffusers ``AutoencoderKL``, 128-512 channels) with
deterministic random weights, decodes one random latent untiled and with the quadtree tiled
decoder, prints the error, time and peak device memory of both, and writes two PNGs: the tile plan
over the decoded image, and the error map (|tiled - untiled|, scaled so 1e-4 is white). On a GPU
the peaks are ``torch.cuda.max_memory_allocated``; without one they are counted tensor by tensor on
the meta device (benchmarks/tensor_memory.py) and labelled so: a count, which for tiled runs of
stills was 8-31x below what a GPU measured (see that module), not a measurement.
"""

from __future__ import annotations

import argparse
import copy
import json
import pathlib
import sys

import numpy as np
import torch
from PIL import Image

from .common import errors, host_decode, load_pack, measure, pack_decode, sdxl_class_vae
from .tensor_memory import counted_peak_gib


def _png(img: torch.Tensor, path: pathlib.Path) -> None:
    Image.fromarray((img.clamp(0, 1).numpy() * 255).round().astype(np.uint8)).save(path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latent", type=int, nargs=2, default=[48, 64], metavar=("H", "W"))
    p.add_argument("--tile", type=int, default=128, help="tile side in output px")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out"))
    args = p.parse_args(argv)
    tv = load_pack().tiled_vae
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vae = sdxl_class_vae().to(device)
    z = torch.randn(1, 4, *args.latent, generator=torch.Generator().manual_seed(0)).to(device)

    config = tv.TilingConfig(tile_size=args.tile, mode="tiled", activation_store="cpu")
    reports: list = []

    def tiled() -> torch.Tensor:
        out, report = pack_decode(vae, z, config)
        reports.append(report)
        return out

    untiled = measure(lambda: host_decode(vae, z), device)
    result = measure(tiled, device)
    ref, out, report = untiled.out, result.out, reports[-1]
    memory = {"untiled_peak_gib": untiled.peak_gib, "tiled_peak_gib": result.peak_gib}
    if result.peak_gib is None:  # no allocator to ask: count what a GPU would hold, on a weightless copy
        meta, z_meta = copy.deepcopy(vae).to("meta"), z.to("meta")
        memory = {
            "untiled_peak_gib_counted": round(counted_peak_gib(lambda: host_decode(meta, z_meta)), 3),
            "tiled_peak_gib_counted": round(counted_peak_gib(lambda: pack_decode(meta, z_meta, config)), 3),
            "memory": "counted on the meta device, not measured on a GPU",
        }
    summary = {
        "image_px": [int(ref.shape[-1]), int(ref.shape[-2])],
        "tiles": len(report.plan),
        "tile_px": report.tile_size,
        **errors(out, ref, 2.0),
        "untiled_s": round(untiled.seconds, 2),
        "tiled_s": round(result.seconds, 2),
        **memory,
        "device": str(device),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    image = ((out[0].float().cpu().movedim(0, -1) + 1) / 2)[None]
    _png(tv.draw_plan(image, report.plan, tuple(out.shape[-2:]))[0], args.out / "demo_plan.png")
    err = (out - ref)[0].abs().amax(0).float().cpu() / 1e-4
    _png(err[..., None].expand(-1, -1, 3), args.out / "demo_error.png")
    sys.stdout.write(json.dumps(summary) + "\n")
    sys.stdout.write(f"wrote {args.out / 'demo_plan.png'} and {args.out / 'demo_error.png'}\n")


if __name__ == "__main__":
    main()
