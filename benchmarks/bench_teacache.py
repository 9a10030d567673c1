"""TeaCache (Qwen-Image): decision overhead at threshold 0, and wall time against the skipped fraction.

    COMFYUI_PATH=/path/to/ComfyUI python -m benchmarks.bench_teacache            # CPU: small sizes, fp32
    COMFYUI_PATH=... python -m benchmarks.bench_teacache --device cuda           # GPU: full width, 60 layers, bf16
    python -m benchmarks.bench_teacache                                          # no ComfyUI: the test mirror

The model is ComfyUI's own ``QwenImageTransformer2DModel`` (run with a Python that has ComfyUI's
requirements) with random weights; without ``COMFYUI_PATH`` it is the CPU tests' mirror of it
(same call structure, no rotary embedding), labelled ``mirror``. Each run is a CFG sampling loop
(cond and uncond batched, Euler) calling the model the way ComfyUI does, with the pack's hooks in
``transformer_options`` exactly as ``apply_teacache`` installs them. Prints one JSON line per
configuration: seconds per step, overhead vs unpatched, skipped fraction, speedup and the ideal
``1 / (1 - skipped)``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
import uuid
from typing import Any

import torch

from .comfy_host import import_comfy
from .common import emit, load_pack, randomise_


def _model(heads: int, layers: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.nn.Module, str, int]:
    if os.environ.get("COMFYUI_PATH"):
        import_comfy(device)
        import comfy.ops
        from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel

        model = QwenImageTransformer2DModel(
            num_layers=layers, num_attention_heads=heads, operations=comfy.ops.disable_weight_init, dtype=dtype
        )
        return randomise_(model).to(device, dtype), "comfyui", 3584
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "teacache"))
    from qwen_mirror import QwenImageMirror

    model = QwenImageMirror(num_layers=layers, dim=heads * 128, heads=heads, context_dim=256)
    return randomise_(model).to(device, dtype), "mirror", 256


def _hooks(tc: Any, layers: int, config: Any, sigmas: torch.Tensor) -> tuple[dict, Any]:
    from_hooks = tc.hooks
    run = tc.TeaCacheRun(config, sigmas.tolist())
    options = {
        "patches_replace": {
            "dit": {("double_block", i): from_hooks.BlockPatch(i, i == layers - 1) for i in range(layers)}
        },
        "wrappers": {from_hooks.DIFFUSION_MODEL: {from_hooks.TEACACHE_KEY: [from_hooks.diffusion_model_wrapper]}},
        from_hooks.RUN_KEY: run,
    }
    return options, run


def _sample(model, x, context, sigmas, options, device) -> float:
    """A batched-CFG Euler loop; returns seconds for the whole loop (synchronised)."""
    uuids = [uuid.uuid4(), uuid.uuid4()]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(len(sigmas) - 1):
            t_o = dict(options, sigmas=sigmas[i : i + 1], uuids=uuids, cond_or_uncond=[1, 0], sample_sigmas=sigmas)
            t = sigmas[i].expand(2).to(device)
            v = model(torch.cat([x, x]), t, context, transformer_options=t_o)
            v_uncond, v_cond = v.float().chunk(2)
            x = x + (v_uncond + 4.0 * (v_cond - v_uncond)).to(x.dtype) * (sigmas[i + 1] - sigmas[i])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--heads", type=int, help="attention heads of 128 (24 = Qwen-Image's full 3072 width)")
    ap.add_argument("--layers", type=int, help="transformer blocks (Qwen-Image has 60)")
    ap.add_argument("--size", type=int, help="image side in pixels (latent = size / 8)")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--text-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (the minimum is kept)")
    ap.add_argument("--threads", type=int, help="CPU threads for torch (default: 1 on CPU, steadier on a busy machine)")
    a = ap.parse_args()
    device = torch.device(a.device)
    gpu = device.type == "cuda"
    heads = a.heads or (24 if gpu else 4)
    layers = a.layers or (60 if gpu else 4)
    size = a.size or (1024 if gpu else 256)
    steps = a.steps or (20 if gpu else 10)
    dtype = torch.bfloat16 if gpu else torch.float32
    torch.manual_seed(0)
    if a.threads or not gpu:
        torch.set_num_threads(a.threads or 1)

    tc = load_pack().teacache
    model, kind, ctx_dim = _model(heads, layers, device, dtype)
    x = torch.randn(1, 16, 1, size // 8, size // 8, device=device, dtype=dtype)
    context = torch.randn(2, a.text_tokens, ctx_dim, device=device, dtype=dtype)
    sigmas = torch.linspace(1, 0, steps + 1)
    sigmas = 3.0 * sigmas / (1 + 2.0 * sigmas)  # shift 3

    def best(options_fn) -> tuple[float, Any]:
        times, run = [], None
        for _ in range(a.repeats):
            options, run = options_fn()
            times.append(_sample(model, x, context, sigmas, options, device))
            if run is not None:
                run.close()
        return min(times), run

    _sample(model, x, context, sigmas, {}, device)  # warm-up
    base, _ = best(lambda: ({}, None))
    common = dict(model=kind, device=str(device), dtype=str(dtype).split(".")[-1], width=heads * 128, layers=layers,
                  size=size, steps=steps, cfg="batched")  # fmt: skip
    emit(**common, config="unpatched", s_per_step=round(base / steps, 5))
    configs = [
        ("threshold 0", dict(threshold=0.0)),
        ("forced skips, 1 in a row, second half", dict(threshold=1e9, max_skips=1, start=0.5)),
        ("forced skips, 1 in a row", dict(threshold=1e9, max_skips=1)),
        ("forced skips, 2 in a row", dict(threshold=1e9, max_skips=2)),
        ("forced skips, 3 in a row", dict(threshold=1e9, max_skips=3)),
    ]
    for name, kw in configs:
        config = tc.TeaCacheConfig(min_steps=0, **kw)
        seconds, run = best(lambda config=config: _hooks(tc, layers, config, sigmas))
        skipped = run.skipped_calls / max(run.calls, 1)
        row = dict(**common, config=name, s_per_step=round(seconds / steps, 5), skipped_fraction=round(skipped, 3))
        if skipped == 0:
            row["overhead_pct"] = round(100 * (seconds - base) / base, 2)
        else:
            ideal = 1 / (1 - skipped)
            row.update(speedup=round(base / seconds, 3), ideal=round(ideal, 3),
                       speedup_vs_ideal_pct=round(100 * (base / seconds) / ideal - 100, 1))  # fmt: skip
        emit(**row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
