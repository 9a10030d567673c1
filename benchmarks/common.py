"""Shared helpers for the benchmarks: the pack, random weights, the pack's runs, timing and error figures."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import pathlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

PACK_ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_pack(name: str = "quadtree_tile") -> Any:
    """Import the repository as a package, the way ComfyUI imports a custom-node folder."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# ---------------------------------------------------------------------------------------------
# Random weights


@dataclass(frozen=True)
class Uniform:
    """Values drawn uniformly from ``[low, high)``."""

    low: float
    high: float


@dataclass(frozen=True)
class Normal:
    """Values drawn from a normal distribution with mean 0 and standard deviation ``std``."""

    std: float


Fill = Uniform | Normal | float
"""How a kind of parameter is set: drawn (:class:`Uniform`, :class:`Normal`) or a constant (a float, no draw)."""

Spread = float | Callable[[int], float]
"""Scale of the matrices' values: ``s`` gives ``s / sqrt(fan_in)``; a function gives it from ``fan_in``."""

NORM_SCALE_NAMES = ("gamma",)
"""Parameter names that are norm scales whatever their shape (Wan's RMS norm ``gamma`` is (C, 1, 1[, 1]))."""


def is_norm_scale(name: str, shape: Sequence[int]) -> bool:
    """A norm's scale: named ``gamma`` (any shape), or a 1-D ``weight`` / ``scale``."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf in NORM_SCALE_NAMES or (leaf in ("weight", "scale") and len(shape) == 1)


def random_weights(
    shapes: Mapping[str, Sequence[int]],
    seed: int = 0,
    *,
    matrices: str = "uniform",
    spread: Spread = 1.0,
    vectors: Fill = 0.0,
    norm_scales: float | None = 1.0,
    sort: bool = True,
) -> dict[str, torch.Tensor]:
    """Deterministic fp32 values for parameters of the given shapes, from one generator seeded ``seed``.

    Drawn name by name (sorted when ``sort``, else in the mapping's order), so the same names and
    shapes always get the same values, whether they come from a module or a file's key list.

    * Norm scales (:func:`is_norm_scale`) are set to ``norm_scales``; with ``None`` they are not
      told apart and follow the rules below by their rank.
    * Matrices (2 or more dims): ``matrices="uniform"`` draws from ``[-b, b)``, ``"normal"`` from a
      normal distribution with standard deviation ``b``, where ``b = spread / sqrt(fan_in)``
      (``fan_in`` = elements per output row) or ``spread(fan_in)`` when ``spread`` is a function.
      1 with ``"uniform"`` is PyTorch's own default for linear and convolution layers; values
      stay well inside bf16's range through any depth.
    * Other 1-D parameters (biases) are set by ``vectors``.
    """
    if matrices not in ("uniform", "normal"):
        raise ValueError(f"matrices must be 'uniform' or 'normal', not {matrices!r}")
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name in sorted(shapes) if sort else shapes:
        shape = tuple(shapes[name])
        if norm_scales is not None and is_norm_scale(name, shape):
            out[name] = torch.full(shape, float(norm_scales))
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            out[name] = _matrix(shape, fan_in, matrices, spread, g)
        else:
            out[name] = _fill(shape, vectors, g)
    return out


def _matrix(shape: tuple[int, ...], fan_in: int, kind: str, spread: Spread, g: torch.Generator) -> torch.Tensor:
    if kind == "uniform":
        bound = spread(fan_in) if callable(spread) else spread / math.sqrt(max(1, fan_in))
        return torch.empty(shape).uniform_(-bound, bound, generator=g)
    draw = torch.randn(shape, generator=g)
    return draw * spread(fan_in) if callable(spread) else draw * spread / math.sqrt(max(1, fan_in))


def _fill(shape: tuple[int, ...], fill: Fill, g: torch.Generator) -> torch.Tensor:
    if isinstance(fill, Uniform):
        return torch.empty(shape).uniform_(fill.low, fill.high, generator=g)
    if isinstance(fill, Normal):
        return torch.randn(shape, generator=g) * fill.std
    return torch.full(shape, float(fill))


def randomise_(module: torch.nn.Module, seed: int = 0, **how: Any) -> torch.nn.Module:
    """Set every parameter of ``module`` in place from :func:`random_weights` (same keywords) and
    return it in eval mode.

    The defaults (PyTorch's fan-in uniform bound for matrices, 1 for norm scales, Wan's ``gamma``
    included, 0 for biases) keep activations near unit scale at any depth; the VAE benchmarks still
    check that the untiled output is finite and stop the case, naming the first module at fault, when not.
    """
    params = dict(module.named_parameters())
    values = random_weights({name: tuple(p.shape) for name, p in params.items()}, seed, **how)
    with torch.no_grad():
        for name, value in values.items():
            params[name].copy_(value)
    return module.eval()


SDXL_CLASS_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
}
"""diffusers ``AutoencoderKL`` arguments of the SD/SDXL architecture (128-512 channels, 8x, 4 latent channels)."""


def sdxl_class_vae() -> torch.nn.Module:
    """diffusers ``AutoencoderKL`` with the SD/SDXL architecture and deterministic random weights."""
    from diffusers import AutoencoderKL

    return randomise_(AutoencoderKL(**SDXL_CLASS_CONFIG))


# ---------------------------------------------------------------------------------------------
# The pack's runs: every benchmark tiles through these two functions.


def is_comfy_vae(vae: Any) -> bool:
    """A ComfyUI ``comfy.sd.VAE`` (it holds the torch module as ``first_stage_model``)."""
    return hasattr(vae, "first_stage_model")


def host_decode(vae: Any, z: torch.Tensor) -> torch.Tensor:
    """What the host's own decode returns: ``comfy.sd.VAE.decode`` (ComfyUI images, what VAEDecode
    runs) or a diffusers autoencoder's ``decode(z).sample`` (``z`` moved to the model's device and dtype)."""
    if is_comfy_vae(vae):
        with _no_comfy_fallback("decode"):
            return vae.decode(z)
    p = next(vae.parameters())
    return vae.decode(z.to(p.device, p.dtype)).sample


def host_encode(vae: Any, x: torch.Tensor) -> torch.Tensor:
    """What the host's own encode returns: ``comfy.sd.VAE.encode`` of ComfyUI images (what VAEEncode
    runs) or a diffusers autoencoder's ``encode(x).latent_dist.mode()``."""
    if is_comfy_vae(vae):
        with _no_comfy_fallback("encode"):
            return vae.encode(x)
    p = next(vae.parameters())
    return vae.encode(x.to(p.device, p.dtype)).latent_dist.mode()


def pack_decode(vae: Any, z: torch.Tensor, config: Any, free_gib: float | None = None) -> tuple[torch.Tensor, Any]:
    """The pack's tiled decode: for a ComfyUI ``comfy.sd.VAE``, what Quadtree VAE Decode runs (the
    node's glue: its checks, its model load for one tile, ComfyUI's memory estimate for ``auto``);
    for a diffusers autoencoder, its own decode with the whole VAE under ``tiled_vae.tiled``.

    ``config`` is a ``TilingConfig``. ``free_gib`` runs the decision as if the GPU had that much
    free (the store split and tile of a smaller card, on a large one): the host's own decode under
    ``tiled_vae.tiled`` with the free memory given and, for ComfyUI, its memory estimate. Returns
    the output (as :func:`host_decode` gives it) and the pack's run report.
    """
    return _pack(vae, "decode", z, config, free_gib)


def pack_encode(vae: Any, x: torch.Tensor, config: Any, free_gib: float | None = None) -> tuple[torch.Tensor, Any]:
    """The pack's tiled encode, as :func:`pack_decode` (Quadtree VAE Encode's glue for a ComfyUI VAE:
    ComfyUI images in, its latent out)."""
    return _pack(vae, "encode", x, config, free_gib)


def _pack(vae: Any, role: str, x: torch.Tensor, config: Any, free_gib: float | None) -> tuple[torch.Tensor, Any]:
    pack = load_pack()
    if is_comfy_vae(vae) and free_gib is None:
        glue = pack.nodes.comfy_vae.decode if role == "decode" else pack.nodes.comfy_vae.encode
        return glue(vae, x, config)
    hooks: dict[str, Any] = {}
    if free_gib is not None:
        hooks["free_memory"] = lambda _: int(free_gib * 2**30)
    if is_comfy_vae(vae):
        estimate = vae.memory_used_decode if role == "decode" else vae.memory_used_encode
        hooks["untiled_memory"] = lambda t: estimate(t.shape, vae.vae_dtype)
    with pack.tiled_vae.tiled(vae.first_stage_model if is_comfy_vae(vae) else vae, config, **hooks) as hook:
        out = host_run(vae, role, x)
    return out, hook.handler.report


def host_run(vae: Any, role: str, x: torch.Tensor) -> torch.Tensor:
    """:func:`host_decode` or :func:`host_encode`, by ``role`` (``"decode"`` or ``"encode"``)."""
    return host_decode(vae, x) if role == "decode" else host_encode(vae, x)


def pack_run(
    vae: Any, role: str, x: torch.Tensor, config: Any, free_gib: float | None = None
) -> tuple[torch.Tensor, Any]:
    """:func:`pack_decode` or :func:`pack_encode`, by ``role`` (``"decode"`` or ``"encode"``)."""
    return _pack(vae, role, x, config, free_gib)


class _ComfyFallback(Exception):
    """ComfyUI ran out of memory in ``VAE.decode``/``encode`` and switched to its own tiled call."""


class _FallbackSpy(logging.Handler):
    """Notes ComfyUI's warning that it is retrying a decode or encode tiled."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = False

    def emit(self, record: logging.LogRecord) -> None:
        self.seen = self.seen or "retrying with tiled" in record.getMessage()


@contextlib.contextmanager
def _no_comfy_fallback(role: str) -> Iterator[None]:
    """Raise instead of letting ComfyUI's out-of-memory fallback pass as an untiled run.

    ``comfy.sd.VAE.decode``/``encode`` catch out-of-memory errors, log a warning and run their own
    tiled code; a row timed that way would not be what it says. The warning is the only sign.
    """
    spy = _FallbackSpy()
    root = logging.getLogger()
    root.addHandler(spy)
    try:
        yield
    finally:
        root.removeHandler(spy)
    if spy.seen:
        raise _ComfyFallback(f"out of memory: ComfyUI's VAE.{role} fell back to its own tiled {role}")


def oom_errors() -> tuple[type[BaseException], ...]:
    """What a run that does not fit raises: torch's out-of-memory error, or ComfyUI's fallback."""
    return (torch.OutOfMemoryError, _ComfyFallback)


# ---------------------------------------------------------------------------------------------
# Timing, memory and error figures


@dataclass
class Measurement:
    """One run measured: its last output, the fastest timed call, how many were timed, the device peak.

    ``repeats`` 0 means one long call (see :func:`measure`), timed as it ran first. ``peak_gib``:
    ``torch.cuda.max_memory_allocated`` above what was allocated before the call, the largest over
    the timed calls; None off CUDA (a CPU has no such counter).
    """

    out: Any
    seconds: float
    repeats: int
    peak_gib: float | None


SHORT_RUN_S = 1.0
"""A timed call shorter than this is repeated (up to ``repeats`` times) and the fastest is kept."""

LONG_RUN_S = 15.0
"""A warm-up call at least this long is reported as it is, not run again: its cold-start share is
small, and on a GPU the time is better spent on the next case."""


def measure(fn: Callable[[], Any], device: torch.device, repeats: int = 3) -> Measurement:
    """Run ``fn`` once as a warm-up (CUDA context, kernel selection, allocator), then timed: again
    while a call is short (under :data:`SHORT_RUN_S`, at most ``repeats`` times); the minimum is
    reported. A warm-up of :data:`LONG_RUN_S` or more is the figure itself (``repeats`` 0). Every
    run of a case goes through here, so none absorbs another's cold start. Calls run in inference
    mode, as ComfyUI runs its nodes (its tiled encode needs it).
    """
    with torch.inference_mode():
        out, warm_s, warm_peak = _timed(fn, device)
        if warm_s >= LONG_RUN_S:
            return Measurement(out, warm_s, 0, warm_peak)
        times: list[float] = []
        peak: float | None = None
        while len(times) < repeats and (not times or times[-1] < SHORT_RUN_S):
            out = None  # the previous output must not count towards this call's peak
            out, seconds, call_peak = _timed(fn, device)
            times.append(seconds)
            peak = call_peak if peak is None else max(peak, call_peak or 0.0)
    return Measurement(out, min(times), len(times), peak)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float, float | None]:
    """One call of ``fn``: its output, wall seconds (synchronised on CUDA) and peak GiB above the start."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**30 if cuda else None
    return out, seconds, peak


def nonfinite(t: torch.Tensor) -> int:
    """Number of NaN or infinite values in ``t``."""
    return int((~torch.isfinite(t)).sum())


def errors(out: torch.Tensor, ref: torch.Tensor, peak: float) -> dict[str, float | str]:
    """Max abs difference and PSNR (``peak`` = the signal's span) of ``out`` against ``ref`` in fp32.

    ``psnr_db`` is the string ``"inf"`` when the two are identical (JSON has no infinity). Both must
    be finite (check with :func:`nonfinite` first) and of one shape.
    """
    if out.shape != ref.shape:
        raise ValueError(f"output shape {tuple(out.shape)} differs from the reference's {tuple(ref.shape)}")
    d = out.detach().float().cpu() - ref.detach().float().cpu()
    mse = float(d.square().mean())
    return {
        "max_abs": float(d.abs().max()),
        "psnr_db": "inf" if mse == 0 else round(10 * math.log10(peak**2 / mse), 2),
    }


def emit(**row: Any) -> None:
    """Print one JSON line of figures (what every benchmark outputs) and flush it at once.

    None values are left out; NaN and infinity are refused (a row never holds them).
    """
    clean = {k: v for k, v in row.items() if v is not None}
    sys.stdout.write(json.dumps(clean, allow_nan=False) + "\n")
    sys.stdout.flush()


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def device_and_dtype(device: str | None, dtype: str | None) -> tuple[torch.device, torch.dtype]:
    """The compute device (CUDA when present) and dtype (bf16 on CUDA, fp32 on CPU) unless given.

    TF32 is switched off on CUDA: it alone leaves ~7e-4 between differently shaped fp32 runs, which
    would hide what tiling does, and the fp32 reference of the error figures must be plain fp32.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    return dev, DTYPES[dtype or ("bf16" if dev.type == "cuda" else "fp32")]


def describe_device(device: torch.device) -> dict[str, Any]:
    """The header fields every benchmark prints first: the machine, torch, and what memory means."""
    cuda = device.type == "cuda"
    return {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
        "memory": "torch.cuda.max_memory_allocated above the start" if cuda else "not measured (no GPU)",
    }
