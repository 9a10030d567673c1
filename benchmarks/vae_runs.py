"""One VAE benchmark case side by side: the fp32 reference, untiled, the pack's configurations and the
other tilers, each measured the same way (:func:`~.common.measure`), one JSON row each as it finishes.

Error columns of a run: ``psnr_db`` / ``max_abs`` against untiled in the same dtype, and
``psnr_vs_fp32_db`` against untiled fp32 (TF32 off) of the same input; the untiled row's
``psnr_vs_fp32_db`` is the floor a tiled row is judged against. PSNR's peak is the image's span
(1 for ComfyUI's [0, 1] images, 2 for diffusers' [-1, 1]) for a decode, the fp32 latent's span
(max - min) for an encode.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._pytree import tree_flatten

from . import comfy_host
from .common import (
    Measurement,
    describe_device,
    device_and_dtype,
    emit,
    errors,
    host_run,
    is_comfy_vae,
    load_pack,
    measure,
    nonfinite,
    oom_errors,
    pack_run,
)

log = logging.getLogger("comfyui-quadtree-tile.benchmarks")

Other = Callable[[str, torch.Tensor], torch.Tensor]
"""Another tiler's call: ``other(role, x)`` for role ``"decode"`` or ``"encode"``."""


@dataclass
class Host:
    """A VAE as one host runs it, what it is compared with, and how to make its fp32 twin.

    ``vae``: a ComfyUI ``comfy.sd.VAE`` or a diffusers autoencoder, in the run's dtype on the device.
    ``fp32``: builds the same VAE in fp32 on the device, for the reference. ``image_span``: the
    span of the host's images (PSNR's peak for decodes). ``others``: row name -> other tiler.
    """

    label: str
    vae: Any
    fp32: Callable[[], Any]
    image_span: float
    others: dict[str, Other] = field(default_factory=dict)

    @property
    def module(self) -> torch.nn.Module:
        """The torch module (ComfyUI's ``first_stage_model`` or the diffusers autoencoder)."""
        return self.vae.first_stage_model if is_comfy_vae(self.vae) else self.vae


def comfy_vae_host(model: torch.nn.Module, dtype: torch.dtype, tile: int) -> Host:
    """``model``'s weights in ``comfy.sd.VAE``; compared with ComfyUI's tiled nodes at ``tile`` px."""
    vae = comfy_host.load_vae(model, dtype)
    overlap = comfy_host.tiled_overlap(tile)

    def tiled_node(role: str, x: torch.Tensor) -> torch.Tensor:
        if role == "decode":
            return comfy_host.decode_tiled(vae, x, tile, overlap)
        return comfy_host.encode_tiled(vae, x, tile, overlap)

    return Host(
        label=f"comfyui {type(model).__name__} (comfy.sd.VAE)",
        vae=vae,
        fp32=lambda: comfy_host.load_vae(model, torch.float32),
        image_span=1.0,
        others={comfy_host.tiled_label(tile): tiled_node},
    )


def diffusers_vae_host(model: torch.nn.Module, device: torch.device, dtype: torch.dtype, tile: int) -> Host:
    """A diffusers autoencoder (``model`` is the fp32 CPU master); compared with its own tiling at ``tile`` px."""
    vae = copy.deepcopy(model).to(device, dtype)
    name, configure = _diffusers_tiling(tile)

    def diffusers_tiled(role: str, x: torch.Tensor) -> torch.Tensor:
        configure(vae)
        try:
            return host_run(vae, role, x)
        finally:
            vae.disable_tiling()

    return Host(
        label=f"diffusers {type(model).__name__}",
        vae=vae,
        fp32=lambda: copy.deepcopy(model).to(device, torch.float32),
        image_span=2.0,
        others={name: diffusers_tiled},
    )


def _diffusers_tiling(tile: int) -> tuple[str, Callable[[Any], None]]:
    """diffusers' own tiling at ``tile`` px: its own overlap (a quarter) for ``AutoencoderKL``; for
    the Wan family (whose ``enable_tiling`` takes the tile and the stride) the overlap ComfyUI's
    comparison runs at, 64 px at 512."""
    stride = tile - comfy_host.tiled_overlap(tile)

    def configure(vae: Any) -> None:
        if "tile_sample_min_height" in inspect.signature(vae.enable_tiling).parameters:
            vae.enable_tiling(tile, tile, stride, stride)
        else:
            vae.enable_tiling()
            vae.tile_sample_min_size = tile
            vae.tile_latent_min_size = tile // 8

    return f"diffusers enable_tiling {tile} px", configure


SMALL_CARDS = (8.0, 2.0)
"""Free GiB of the smaller GPUs whose decision the ``auto`` rows also take (on whatever card runs)."""


def pack_configs(tile: int) -> list[tuple[str, Any, float | None]]:
    """The pack's configurations every case runs, with the free memory they decide with (None: the
    card's own): ``tile`` px tiles with each activation store, and the node defaults (``mode="auto"``:
    untiled when it fits, else tile and store from free memory) as they are and, last (a time limit
    cuts them first), as on cards with :data:`SMALL_CARDS` free."""
    tv = load_pack().tiled_vae
    fixed = {"tile_size": tile, "planner": "grid", "mode": "tiled"}
    return [
        (f"quadtree-tile {tile} px, device store", tv.TilingConfig(**fixed, activation_store="device"), None),
        ("quadtree-tile auto", tv.TilingConfig(), None),
        (f"quadtree-tile {tile} px, store auto", tv.TilingConfig(**fixed, activation_store="auto"), None),
        (f"quadtree-tile {tile} px, CPU store", tv.TilingConfig(**fixed, activation_store="cpu"), None),
        *((f"quadtree-tile auto, as with {gib:g} GiB free", tv.TilingConfig(), gib) for gib in SMALL_CARDS),
    ]


def _as_images(host: Host, role: str, out: torch.Tensor) -> torch.Tensor:
    """ComfyUI's decoded video as frames, the way its nodes return images; anything else as it is."""
    return comfy_host.frames(out) if role == "decode" and is_comfy_vae(host.vae) else out


def _untiled(host: Host, vae: Any, role: str, x: torch.Tensor) -> torch.Tensor:
    return _as_images(host, role, host_run(vae, role, x))


def _pack(host: Host, role: str, x: torch.Tensor, config: Any, free_gib: float | None) -> tuple[torch.Tensor, Any]:
    out, report = pack_run(host.vae, role, x, config, free_gib)
    return _as_images(host, role, out), report


def _reference(host: Host, role: str, x: torch.Tensor) -> tuple[torch.Tensor | None, str | None]:
    """Untiled fp32 output on the CPU, or None and why not (out of memory, non-finite)."""
    vae = host.fp32()
    try:
        with torch.inference_mode():
            ref = _untiled(host, vae, role, x).float().cpu()
    except oom_errors() as e:
        return None, f"untiled fp32 does not fit ({_first_line(e)})"
    except Exception as e:
        log.exception("%s: the untiled fp32 reference failed", role)
        return None, f"untiled fp32 failed: {type(e).__name__}: {_first_line(e)}"
    finally:
        del vae
        if is_comfy_vae(host.vae):
            comfy_host.unload_all()
        elif torch.cuda.is_available():
            torch.cuda.empty_cache()
    bad = nonfinite(ref)
    return (ref, None) if not bad else (None, f"untiled fp32 output holds {bad} non-finite values")


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0][:160] if str(e) else type(e).__name__


def first_nonfinite(model: torch.nn.Module, fn: Callable[[], Any]) -> str:
    """The first module (in call order) whose output holds NaN or infinity during ``fn()``."""
    names = {m: n or "(root)" for n, m in model.named_modules()}
    found: list[str] = []

    class _Found(Exception):
        pass

    def check(module: torch.nn.Module, _args: Any, out: Any) -> None:
        tensors = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.is_floating_point()]
        if any(nonfinite(t) for t in tensors):
            found.append(f"{names[module]} ({type(module).__name__})")
            raise _Found

    handles = [m.register_forward_hook(check) for m in model.modules()]
    try:
        with torch.inference_mode():
            fn()
    except _Found:
        pass
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else "no module's output (the host's own code made it)"


def run_case(
    host: Host,
    case: str,
    role: str,
    x: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype,
    configs: list[tuple[str, Any, float | None]],
    others: bool = True,
) -> bool:
    """Measure every run of one case and emit a row for each; False when the case had to stop."""
    ref32, why_no_ref = (None, None) if dtype == torch.float32 else _reference(host, role, x)

    base = _measured(case, "untiled", lambda: _untiled(host, host.vae, role, x), device)
    untiled = None
    if base is not None:
        untiled = base.out.float().cpu()
        bad = nonfinite(untiled)
        if bad:
            where = first_nonfinite(host.module, lambda: _untiled(host, host.vae, role, x))
            fp32 = "" if dtype == torch.float32 else f"; fp32 reference: {why_no_ref or 'finite'}"
            emit(
                case=case,
                run="untiled",
                error=f"untiled {_dtype_name(dtype)} output holds {bad} non-finite values "
                f"(first non-finite output: {where}{fp32}); case skipped",
            )
            return False
        if dtype == torch.float32:
            ref32 = untiled
    span = host.image_span if role == "decode" else _span(ref32 if ref32 is not None else untiled)

    def compare(out: torch.Tensor) -> dict[str, Any]:
        out = out.float().cpu()
        bad = nonfinite(out)
        if bad:
            return {"nonfinite": bad}
        row: dict[str, Any] = {}
        if untiled is not None:
            row.update(errors(out, untiled, span))
        if ref32 is not None:
            row["psnr_vs_fp32_db"] = errors(out, ref32, span)["psnr_db"]
        else:
            row["fp32_reference"] = why_no_ref
        return row

    if base is not None:
        floor: dict[str, Any] = {}
        if dtype != torch.float32:
            floor = {"psnr_vs_fp32_db": compare(base.out).get("psnr_vs_fp32_db"), "fp32_reference": why_no_ref}
        emit(case=case, run="untiled", **_timing(base), **floor)

    runs: list[tuple[str, Callable[[], Any]]] = []
    if others:
        for name, other in host.others.items():
            runs.append((name, lambda other=other: (_as_images(host, role, other(role, x)), None)))
    for name, cfg, free_gib in configs:
        runs.append((name, lambda cfg=cfg, free_gib=free_gib: _pack(host, role, x, cfg, free_gib)))

    for name, fn in runs:
        m = _measured(case, name, fn, device)
        if m is None:
            continue
        out, report = m.out
        row: dict[str, Any] = {"case": case, "run": name, **_timing(m)}
        if report is not None:
            row.update(
                tiled=report.tiled,
                tiles=len(report.plan),
                tile_px=report.tile_size,
                store=report.store or None,
                retries=report.retries or None,
                reason=report.reason or None,
            )
        if base is not None:
            row["time_ratio"] = round(m.seconds / base.seconds, 3)
        row.update(compare(out))
        emit(**row)
        del out, m
    return True


def _measured(case: str, name: str, fn: Callable[[], Any], device: torch.device) -> Measurement | None:
    """``measure(fn)``, or None after an error row: out of memory, or any failure (a failing run is a
    row; the next runs still get measured; the traceback goes to stderr)."""
    try:
        return measure(fn, device)
    except oom_errors() as e:
        emit(case=case, run=name, error=_first_line(e))
    except Exception as e:
        log.exception("%s, %s failed", case, name)
        emit(case=case, run=name, error=f"{type(e).__name__}: {_first_line(e)} (traceback on stderr)")
    return None


def _timing(m: Measurement) -> dict[str, Any]:
    peak = None if m.peak_gib is None else round(m.peak_gib, 3)
    return {"seconds": round(m.seconds, 4), "repeats": m.repeats, "peak_gib": peak}


def _span(t: torch.Tensor | None) -> float:
    return 1.0 if t is None else max(float(t.max() - t.min()), 1e-12)


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


def check_weights(module: torch.nn.Module) -> None:
    """Stop with a clear message when a weight is NaN or infinite in the run dtype."""
    bad = [n for n, p in module.named_parameters() if nonfinite(p)]
    if bad:
        raise SystemExit(f"{len(bad)} weights hold NaN or infinity (first: {bad[0]}); the random init must be fixed")


@dataclass(frozen=True)
class Bench:
    """What a VAE benchmark module supplies to :func:`main`: its cases and how to build its host and inputs.

    ``parse(case)`` -> (role, sizes); ``make_input(role, sizes, comfy)`` -> the case's input;
    ``make_host(comfy, device, dtype, tile)`` -> the :class:`Host`.
    """

    doc: str
    gpu_cases: list[str]
    cpu_cases: list[str]
    cpu_tile: int
    parse: Callable[[str], tuple[str, tuple[int, ...]]]
    make_input: Callable[[str, tuple[int, ...], bool], torch.Tensor]
    make_host: Callable[[bool, torch.device, torch.dtype, int], Host]


def main(bench: Bench, argv: list[str] | None = None) -> None:
    """Parse the command line, build the host once and run every case (a JSON header row first)."""
    p = argparse.ArgumentParser(description=bench.doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=None, help="see above (defaults: the GPU cases, or small CPU ones)")
    p.add_argument("--tile", type=int, default=None, help=f"tile side in px (512; {bench.cpu_tile} on CPU)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None)
    p.add_argument("--comfy", action="store_true", help="ComfyUI's VAE and its tiled nodes (COMFYUI_PATH)")
    p.add_argument("--no-other", action="store_true", help="skip the comparison tiler")
    args = p.parse_args(argv)
    device, dtype = device_and_dtype(args.device, args.dtype)
    gpu = device.type == "cuda"
    cases = [(case, *bench.parse(case)) for case in args.cases or (bench.gpu_cases if gpu else bench.cpu_cases)]
    tile = args.tile or (512 if gpu else bench.cpu_tile)
    host = bench.make_host(args.comfy, device, dtype, tile)
    check_weights(host.module)
    emit(**describe_device(device), dtype=str(dtype), model=host.label, tile=tile)
    for case, role, sizes in cases:
        x = bench.make_input(role, sizes, args.comfy)
        run_case(host, case, role, x, device, dtype, pack_configs(tile), others=not args.no_other)
