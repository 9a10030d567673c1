"""TeaCache (Qwen-Image), TeaCache Calibrate (Qwen-Image) and TeaCache Fit (Qwen-Image) nodes.

Calibration records and profiles are JSON files under ComfyUI's user directory, in
``<user>/quadtree_tile/teacache/records/`` and ``<user>/quadtree_tile/teacache/profiles/``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from ..teacache import (
    UNCALIBRATED,
    Rescale,
    TeaCacheConfig,
    apply_teacache,
    build_profile,
    fit_records,
    load_profile,
    read_records,
    save_profile,
)
from ..teacache.fit import MIN_PAIRS

log = logging.getLogger("comfyui-quadtree-tile.nodes")

CATEGORY = "quadtree_tile/teacache"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def teacache_dir() -> Path:
    """``<ComfyUI user directory>/quadtree_tile/teacache``."""
    import folder_paths

    return Path(folder_paths.get_user_directory()) / "quadtree_tile" / "teacache"


def _file(kind: str, name: str) -> Path:
    name = name.strip().removesuffix(".json")
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"TeaCache: {kind} name {name!r} is not a plain file name; use letters, digits, '_', '-' or '.'"
        )
    return teacache_dir() / kind / f"{name}.json"


def _profiles() -> list[str]:
    try:
        folder = teacache_dir() / "profiles"
    except ImportError:  # outside ComfyUI (tests, scripts): no user directory
        return []
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


class TeaCacheQwenImage:
    """Skip Qwen-Image transformer steps whose input barely changed, reusing the cached block residual."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "A Qwen-Image or Qwen-Image-Edit model (LoRAs may be applied)."}),
                "threshold": (
                    "FLOAT",
                    {
                        "default": 0.2,
                        "min": 0.0,
                        "max": 5.0,
                        "step": 0.01,
                        "tooltip": "Skip steps while the accumulated change stays below this. 0 never skips (output "
                        "identical to no TeaCache). Higher: faster, further from the uncached image. With a profile "
                        "the unit is the predicted relative output change; uncalibrated it is the raw relative "
                        "change of the first block's input, so the same number skips differently.",
                    },
                ),
                "start": (
                    "FLOAT",
                    {
                        "default": 0.2,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Fraction of the run's steps before which no step is skipped (the early steps "
                        "lay out the composition).",
                    },
                ),
                "end": (
                    "FLOAT",
                    {
                        "default": 0.9,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Fraction of the run's steps after which no step is skipped (the last steps "
                        "refine detail). Must not be below start.",
                    },
                ),
                "profile": (
                    [UNCALIBRATED, *_profiles()],
                    {
                        "default": UNCALIBRATED,
                        "tooltip": "uncalibrated: no fitted rescale; the threshold applies to the raw input change "
                        "(labelled 'uncalibrated' in the log). Otherwise a profile fitted on your model with "
                        "TeaCache Calibrate + TeaCache Fit (files in user/quadtree_tile/teacache/profiles).",
                    },
                ),
                "cache_device": (
                    ["device", "cpu"],
                    {
                        "default": "device",
                        "tooltip": "Where the cached residuals wait between steps (about 50 MB per condition at "
                        "1 megapixel). device: with the model on the GPU (fastest); cpu: system memory.",
                    },
                ),
                "min_steps": (
                    "INT",
                    {
                        "default": 10,
                        "min": 0,
                        "max": 1000,
                        "tooltip": "Runs with fewer steps are left untouched and the log says so: few-step "
                        "(Lightning) runs gain little and lose quality.",
                    },
                ),
                "max_consecutive_skips": (
                    "INT",
                    {
                        "default": 3,
                        "min": 0,
                        "max": 100,
                        "tooltip": "Most steps skipped in a row before one is computed. 0: no limit.",
                    },
                ),
            }
        }

    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model with TeaCache; the input model is unchanged.",)
    FUNCTION = "apply"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "TeaCache for Qwen-Image and Qwen-Image-Edit: a step whose first-block input changed little since the "
        "last computed step reuses that step's transformer residual. Computed steps are bit-identical to the model "
        "without TeaCache; the log ends each run with 'computed k of n calls'."
    )

    def apply(
        self,
        model: Any,
        threshold: float,
        start: float,
        end: float,
        profile: str,
        cache_device: str,
        min_steps: int,
        max_consecutive_skips: int,
    ) -> tuple[Any]:
        rescale = Rescale() if profile == UNCALIBRATED else load_profile(_file("profiles", profile))
        config = TeaCacheConfig(
            threshold=threshold,
            start=start,
            end=end,
            rescale=rescale,
            cache_device=cache_device,
            min_steps=min_steps,
            max_skips=max_consecutive_skips,
        )
        return (apply_teacache(model, config),)  # each sampling run logs its settings and its result


class TeaCacheCalibrate:
    """Record TeaCache calibration data while sampling normally (every step computed)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The Qwen-Image model to calibrate, with the LoRAs you will use."}),
                "records_name": (
                    "STRING",
                    {
                        "default": "qwen-image",
                        "tooltip": "Records file (user/quadtree_tile/teacache/records/<name>.json); every run "
                        "appends to it. Use one name per model + LoRA + sampler + step count setup.",
                    },
                ),
                "model_file": (
                    "STRING",
                    {"default": "", "tooltip": "The model file name, stored with the records as provenance."},
                ),
                "loras": (
                    "STRING",
                    {"default": "", "tooltip": "The LoRAs and strengths in use, stored as provenance."},
                ),
                "prompt": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "The prompt of this run (e.g. one line of teacache/calibration_prompts.txt), "
                        "stored as provenance.",
                    },
                ),
            }
        }

    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model, recording calibration data at every sampling run; outputs are unchanged.",)
    FUNCTION = "apply"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Computes every step and records, per step and condition, the change of the first block's input and of "
        "the model output (with sigma and run settings) for TeaCache Fit. Run many prompts (the pack ships a list "
        "in teacache/calibration_prompts.txt) with your usual sampler, steps, cfg and resolution."
    )

    def apply(self, model: Any, records_name: str, model_file: str, loras: str, prompt: str) -> tuple[Any]:
        path = _file("records", records_name)
        provenance = tuple(
            (k, v.strip()) for k, v in (("model_file", model_file), ("loras", loras), ("prompt", prompt)) if v.strip()
        )
        config = TeaCacheConfig(mode="calibrate", record_path=str(path), provenance=provenance)
        return (apply_teacache(model, config),)


class TeaCacheFit:
    """Fit the TeaCache rescale polynomial to recorded runs and write a profile."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {
            "required": {
                "records_name": (
                    "STRING",
                    {"default": "qwen-image", "tooltip": "The records name used in TeaCache Calibrate."},
                ),
                "profile_name": (
                    "STRING",
                    {
                        "default": "qwen-image",
                        "tooltip": "Profile to write (user/quadtree_tile/teacache/profiles/<name>.json); it appears "
                        "in TeaCache's profile list after a browser refresh.",
                    },
                ),
                "min_r2": (
                    "FLOAT",
                    {
                        "default": 0.8,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Refuse to write a profile whose fit explains less than this share of the "
                        "variance (R²): a poor fit predicts the output change badly.",
                    },
                ),
            }
        }

    RETURN_TYPES = ("STRING",)
    OUTPUT_TOOLTIPS = ("The fit report: n, R², RMSE, input range, coefficients and the profile path.",)
    FUNCTION = "fit"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = (
        f"Fits TeaCache's degree-4 polynomial (input change -> output change) to the calibration records with "
        f"numpy, reports n, R², RMSE and the input range, refuses fewer than {MIN_PAIRS} step pairs or R² below "
        "min_r2, and writes a profile recording its provenance (model file, dtype, LoRAs, steps, sampler, shift, "
        "resolution, prompts, dates)."
    )

    @classmethod
    def IS_CHANGED(cls, records_name: str, profile_name: str, min_r2: float) -> str:  # noqa: N802 - ComfyUI's name
        try:
            path = _file("records", records_name)
            return f"{path}:{os.path.getmtime(path) if path.exists() else 'absent'}"
        except (ValueError, ImportError):
            return records_name

    def fit(self, records_name: str, profile_name: str, min_r2: float) -> tuple[str]:
        records = _file("records", records_name)
        target = _file("profiles", profile_name)
        doc = read_records(records)
        result = fit_records(doc, min_r2=min_r2, source=str(records))
        save_profile(target, build_profile(result, doc, records.name))
        report = f"TeaCache Fit: {result.summary()}; {len(doc['runs'])} runs; profile written to {target}"
        log.info("%s", report)
        return (report,)


NODES = (
    ("QuadtreeTile_TeaCacheQwenImage", "TeaCache (Qwen-Image)", TeaCacheQwenImage),
    ("QuadtreeTile_TeaCacheCalibrate", "TeaCache Calibrate (Qwen-Image)", TeaCacheCalibrate),
    ("QuadtreeTile_TeaCacheFit", "TeaCache Fit (Qwen-Image)", TeaCacheFit),
)
