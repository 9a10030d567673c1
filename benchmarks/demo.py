"""The pack's main job on a built-in default: decode a latent tiled and untiled and compare.

    python -m benchmarks.demo [--latent 48 64] [--tile 128] [--out out/]

Builds a real-architecture SD/SDXL VAE (diffusers ``AutoencoderKL``, 128-512 channels) with
deterministic random weights, decodes one random latent untiled and with the quadtree tiled
decoder, prints the error, time and peak device memory of both, and writes two PNGs: the tile plan
over the decoded image, and the error map (|tiled - untiled|, scaled so 1e-4 is white). Without a
GPU the peaks are what a GPU would hold, counted tensor by tensor on the meta device
(benchmarks/tensor_memory.py).
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

from .common import errors, load_pack, measure, sdxl_class_vae
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
    decoder = sdxl_class_vae().to(device).decoder
    z = torch.randn(1, 4, *args.latent, generator=torch.Generator().manual_seed(0)).to(device)

    config = tv.TilingConfig(tile_size=args.tile, mode="tiled", activation_store="cpu")
    ref, t_ref, peak_ref = measure(lambda: decoder(z), device)
    with tv.tiled(decoder, config) as hook:
        out, t, peak = measure(lambda: decoder(z), device)
    report = hook.handler.report
    if peak is None:  # no allocator to ask: count what a GPU would hold, on a weightless copy
        meta, z_meta = copy.deepcopy(decoder).to("meta"), z.to("meta")
        peak_ref = round(counted_peak_gib(lambda: meta(z_meta)), 3)

        def tiled_on_meta() -> None:
            with tv.tiled(meta, config):
                meta(z_meta)

        peak = round(counted_peak_gib(tiled_on_meta), 3)
    summary = {
        "image_px": [int(ref.shape[-1]), int(ref.shape[-2])],
        "tiles": len(report.plan),
        "tile_px": report.tile_size,
        **errors(out, ref),
        "untiled_s": round(t_ref, 2),
        "tiled_s": round(t, 2),
        "untiled_peak_gib": peak_ref,
        "tiled_peak_gib": peak,
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
