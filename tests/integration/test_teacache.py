"""The three TeaCache nodes over HTTP: Calibrate records runs, Fit writes a profile, TeaCache uses it.

The model is the random 1-block Qwen-Image transformer at 64x64 with seeded random conditioning
(``QuadtreeTileTest_RandomQwenConditioning``), so each run takes seconds on a CPU. What is checked
is what a user sees: the records and profile files, Fit's report, and the run's log lines.
"""

from __future__ import annotations

import json
import re

RECORDS = "qt_int_records"
PROFILE = "qt_int_profile"


def _node(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def sampling_graph(model_node: dict, steps: int, seed: int = 0) -> dict:
    """Qwen-Image sampling of a 64x64 latent through ``model_node`` (fed by node "1"), saved as a latent."""
    return {
        "1": _node("UNETLoader", unet_name="qwen_image_fp8_e4m3fn.safetensors", weight_dtype="default"),
        "2": model_node,
        "3": _node("QuadtreeTileTest_RandomQwenConditioning", seed=seed, tokens=12),
        "4": _node("QuadtreeTileTest_RandomQwenConditioning", seed=seed + 100, tokens=12),
        "5": _node("EmptySD3LatentImage", width=64, height=64, batch_size=1),
        "6": _node(
            "KSampler",
            model=["2", 0],
            seed=seed,
            steps=steps,
            cfg=2.0,
            sampler_name="euler",
            scheduler="simple",
            positive=["3", 0],
            negative=["4", 0],
            latent_image=["5", 0],
            denoise=1.0,
        ),  # fmt: skip
        "7": _node("SaveLatent", samples=["6", 0], filename_prefix="qt_tests/teacache"),
    }


def teacache(**settings) -> dict:
    inputs = {
        "model": ["1", 0], "threshold": 0.2, "start": 0.2, "end": 0.9, "profile": "uncalibrated",
        "cache_device": "device", "min_steps": 10, "max_consecutive_skips": 3, **settings,
    }  # fmt: skip
    return _node("QuadtreeTile_TeaCacheQwenImage", **inputs)


def _teacache_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("TeaCache")]


def test_min_steps_says_caching_was_off_and_why(comfy_server, run_workflow) -> None:
    before = len(comfy_server.log())
    run_workflow(sampling_graph(teacache(min_steps=10), steps=2))
    lines = _teacache_lines(comfy_server.log()[before:])
    assert len(lines) == 1, lines  # one line for the run; applying the node logs nothing
    assert "caching off for this run: the run has 2 steps, fewer than min_steps=10 (few-step runs" in lines[0]
    assert "none skipped" in lines[0] and "skipped 0 of 0" not in lines[0]


def test_calibrate_fit_then_sample_with_the_profile(comfy_server, run_workflow) -> None:
    calibrate = _node(
        "QuadtreeTile_TeaCacheCalibrate", model=["1", 0], records_name=RECORDS,
        model_file="qwen_image_fp8_e4m3fn.safetensors", loras="", prompt="random conditioning",
    )  # fmt: skip
    run_workflow(sampling_graph(calibrate, steps=26))  # 25 step pairs x 2 conditions: Fit's minimum of 50
    records = comfy_server.base / "user" / "quadtree_tile" / "teacache" / "records" / f"{RECORDS}.json"
    doc = json.loads(records.read_text())
    assert len(doc["runs"]) == 1 and len(doc["runs"][0]["records"]) == 50, doc["runs"][0].keys()

    fit = {
        "1": _node("QuadtreeTile_TeaCacheFit", records_name=RECORDS, profile_name=PROFILE, min_r2=0.0),
        "2": _node("PreviewAny", source=["1", 0]),
    }
    (report,) = run_workflow(fit).texts("2")
    assert "n=50" in report and "R²=" in report and f"profiles/{PROFILE}.json" in report, report
    assert (comfy_server.base / "user" / "quadtree_tile" / "teacache" / "profiles" / f"{PROFILE}.json").is_file()

    before = len(comfy_server.log())
    run_workflow(sampling_graph(teacache(profile=PROFILE, threshold=0.5, start=0.0, min_steps=0), steps=8))
    lines = _teacache_lines(comfy_server.log()[before:])
    assert len(lines) == 2 and f"profile '{PROFILE}'" in lines[0], lines  # the run's settings, then its result
    assert re.search(r"computed \d+ of \d+ calls \(skipped \d+ of 8 steps\)", lines[1]), lines
