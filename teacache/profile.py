"""TeaCache profiles: a fitted rescale polynomial with its fit quality and where its data came from."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

from .fit import FitResult
from .records import write_json
from .rescale import Rescale

PROFILE_FORMAT = "quadtree-tile-teacache-profile"
SIGNAL = "qwen-image block 0 modulated input (noisy image tokens), relative L1 between steps"
TARGET = "diffusion model output, relative L1 between steps"
PROVENANCE_FIELDS = (
    "model_file",
    "loras",
    "dtype",
    "steps",
    "sampler",
    "cfg",
    "shift",
    "resolution",
    "prompt",
)


def _collect(runs: list[dict[str, Any]], key: str) -> list[Any]:
    seen: list[Any] = []
    for run in runs:
        v = run.get(key)
        if v not in (None, "") and v not in seen:
            seen.append(v)
    return seen


def build_profile(fit: FitResult, doc: dict[str, Any], records_file: str) -> dict[str, Any]:
    """The profile document for ``fit``, with the provenance gathered from every recorded run."""
    runs = doc["runs"]
    provenance = {f"{k}s" if not k.endswith("s") else k: _collect(runs, k) for k in PROVENANCE_FIELDS}
    provenance.update(
        runs=len(runs),
        recorded=_collect(runs, "date"),
        records_file=records_file,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    return {
        "format": PROFILE_FORMAT,
        "version": 1,
        "model_family": "qwen-image",
        "signal": SIGNAL,
        "target": TARGET,
        "coefficients": list(fit.coefficients),
        "x_range": [fit.x_min, fit.x_max],
        "fit": {"degree": len(fit.coefficients) - 1, "n": fit.n, "r2": fit.r2, "rmse": fit.rmse},
        "provenance": provenance,
    }


def save_profile(path: str | os.PathLike, profile: dict[str, Any]) -> None:
    """Write a profile document (atomically)."""
    write_json(path, profile)


def load_profile(path: str | os.PathLike) -> Rescale:
    """Read a profile into a :class:`Rescale`; raise with the path and the remedy when missing or malformed."""
    path = Path(path)
    fix = "pick another profile, or write it again with 'TeaCache Fit (Qwen-Image)'"
    if not path.is_file():
        raise FileNotFoundError(f"TeaCache profile {path} not found; {fix}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"TeaCache profile {path} is not valid JSON ({e}); {fix}") from e
    if not isinstance(doc, dict) or doc.get("format") != PROFILE_FORMAT:
        raise ValueError(f"TeaCache profile {path} is not a profile (expected format '{PROFILE_FORMAT}'); {fix}")
    if doc.get("model_family") != "qwen-image":
        raise ValueError(f"TeaCache profile {path} is for '{doc.get('model_family')}', not qwen-image; {fix}")
    coefficients, x_range = doc.get("coefficients"), doc.get("x_range")
    if (
        not isinstance(coefficients, list)
        or len(coefficients) != 5
        or not all(isinstance(c, (int, float)) for c in coefficients)
        or not isinstance(x_range, list)
        or len(x_range) != 2
        or not all(isinstance(v, (int, float)) for v in x_range)
    ):
        raise ValueError(
            f"TeaCache profile {path}: needs 'coefficients' (5 numbers, x^4..x^0) and 'x_range' ([min, max]); {fix}"
        )
    try:
        return Rescale(tuple(float(c) for c in coefficients), float(x_range[0]), float(x_range[1]), label=path.stem)
    except ValueError as e:
        raise ValueError(f"TeaCache profile {path}: {e}; {fix}") from e
