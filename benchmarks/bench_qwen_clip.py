"""What the Qwen-Image encode node adds before the text encoder runs: resizing, tokenizing, the file check.

    python -m benchmarks.bench_qwen_clip [--sizes 800x600,1920x1080] [--repeat 3]

For each preset and edit mode it times ``prepare_encode`` (checks, the VAE and vision copies, the chat
text) on random 8-bit images of each size, and reports the vision tokens and reference-latent size
each preset gives. With the Qwen2.5 tokenizer files the tests use (tests/data/qwen25_tokenizer) and
the ``tokenizers`` package it also times tokenizing the chat text. Last, it times the header check of
a file with the full Qwen2.5-VL-7B key layout (tiny tensors, so the figure is the check's own cost).
The text encoder itself is ComfyUI's and is not timed here. One JSON object per line.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import torch

from .common import PACK_ROOT, emit, load_pack


def _time(fn, repeat: int, *fn_args: object, **fn_kwargs: object) -> float:
    fn(*fn_args, **fn_kwargs)  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*fn_args, **fn_kwargs)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _tokenizer():
    directory = PACK_ROOT / "tests" / "data" / "qwen25_tokenizer"
    try:
        sys.path.insert(0, str(PACK_ROOT / "tests" / "qwen_clip"))
        from qwen_clip_helpers import QwenTokenizer

        return QwenTokenizer(directory) if (directory / "vocab.json").is_file() else None
    except ImportError:
        return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="800x600,1920x1080", help="input image sizes WxH, comma separated")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    pack = load_pack()
    qc = pack.qwen_clip
    g = torch.Generator().manual_seed(0)
    tok = _tokenizer()
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        img = torch.randint(0, 256, (1, h, w, 3), generator=g).float() / 255
        for mode, images in (("edit", [("image1", img)]), ("edit-plus", [("image1", img), ("image2", img)])):
            for preset in qc.PRESETS:
                t = _time(qc.prepare_encode, args.repeat, preset, mode, "make it blue", images, with_vae=True)
                plan = qc.prepare_encode(preset, mode, "make it blue", images, with_vae=True)
                row = dict(
                    bench="prepare",
                    input=f"{w}x{h}",
                    mode=mode,
                    preset=preset,
                    images=len(images),
                    ms=round(t * 1000, 1),
                    vision_grid=list(plan.images[0].sizes.vision_grid),
                    vision_tokens=plan.images[0].sizes.vision_tokens,
                    vae_copy=list(plan.images[0].sizes.vae),
                )
                if tok is not None:
                    row["tokenize_ms"] = round(_time(tok, args.repeat, plan.text) * 1000, 2)
                emit(**row)
    sys.path.insert(0, str(PACK_ROOT / "tests" / "qwen_clip"))
    try:
        from qwen_clip_helpers import write_text_encoder
    except ImportError:
        return
    with tempfile.TemporaryDirectory() as d:
        path = str(write_text_encoder(pathlib.Path(d) / "layout.safetensors"))
        t = _time(qc.inspect_qwen_checkpoint, args.repeat, path)
        emit(bench="header_check", tensors=len(qc.read_header(path)), ms=round(t * 1000, 2))


if __name__ == "__main__":
    main()
