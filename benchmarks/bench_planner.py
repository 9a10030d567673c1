"""What the quadtree planner buys over the grid: tile counts, halo overhead, and error along seams.

    python -m benchmarks.bench_planner [--tile 512] [--run-error]

Plans are made for encoding synthetic scenes (a flat gradient sky over a busy textured ground,
with a small high-detail patch) at several sizes, on the full-size SD/SDXL VAE program. Tile counts
and halo overhead are geometry only. ``--run-error`` also encodes a small scene with a reduced-width
VAE under both planners and reports the max error on pixels within 2 px of a tile edge (where seams
would fall) and elsewhere.
"""

from __future__ import annotations

import argparse
import math

import torch

from .common import emit, host_encode, load_pack, pack_encode, randomise_, sdxl_class_vae


def scene(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(1, 3, h, w) in [-1, 1]: smooth sky on the top 60 %, textured ground below, a busy patch."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, h)[:, None].expand(h, w)
    img = torch.stack([0.2 + 0.3 * y, 0.4 + 0.2 * y, 0.9 - 0.2 * y])
    ground = torch.rand(3, h, w, generator=g) * 0.6
    top = int(0.6 * h)
    img[:, top:] = ground[:, top:]
    ph, pw = h // 8, w // 8
    img[:, h // 5 : h // 5 + ph, w // 5 : w // 5 + pw] = torch.rand(3, ph, pw, generator=g)
    return (img * 2 - 1)[None]


def geometry(args: argparse.Namespace, tv: object) -> None:
    from quadtree_tile.tiled_vae.families import detect
    from quadtree_tile.tiled_vae.image.engine import Engine, RunOptions

    encoder = sdxl_class_vae().encoder
    program = detect(encoder).build(encoder)
    cpu = torch.device("cpu")
    for h, w in ((1024, 1024), (1328, 1328), (1536, 2048), (2048, 2048), (4096, 4096)):
        detail = tv.detail_map(scene(h, w), program.align)
        for planner in ("grid", "quadtree"):
            if planner == "grid":
                plan = tv.grid_plan(h, w, args.tile, program.align)
            else:
                plan = tv.quadtree_plan(h, w, args.tile, program.align, detail)
            engine = Engine(program, plan, (h, w), RunOptions(cpu), torch.bfloat16)
            emit(
                size=f"{w}x{h}",
                planner=planner,
                tile=args.tile,
                tiles=len(plan),
                tile_steps=engine.total,
                halo_overhead=round(engine.halo_overhead(), 4),
            )


def seam_error(tv: object) -> None:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
    )
    randomise_(vae)
    x = scene(384, 512)
    with torch.no_grad():
        ref = host_encode(vae, x)
        for planner in ("grid", "quadtree"):
            cfg = tv.TilingConfig(tile_size=128, planner=planner, mode="tiled", min_tile_size=32)
            out, report = pack_encode(vae, x, cfg)
            near = torch.zeros(ref.shape[-2:], dtype=torch.bool)
            for r in report.plan:  # tile edges at latent resolution (8 px per latent px)
                for edge in (r.y0, r.y1):
                    e = math.ceil(edge / 8)
                    near[max(0, e - 2) : e + 2, :] = True
                for edge in (r.x0, r.x1):
                    e = math.ceil(edge / 8)
                    near[:, max(0, e - 2) : e + 2] = True
            d = (out - ref).abs().amax(dim=(0, 1))
            emit(
                case="encode 512x384 (reduced width)",
                planner=planner,
                tiles=len(report.plan),
                max_abs_near_seams=float(d[near].max()),
                max_abs_elsewhere=float(d[~near].max()) if (~near).any() else None,
            )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--run-error", action="store_true")
    args = p.parse_args(argv)
    tv = load_pack().tiled_vae
    geometry(args, tv)
    if args.run_error:
        seam_error(tv)


if __name__ == "__main__":
    main()
