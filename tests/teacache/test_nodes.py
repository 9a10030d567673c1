"""The three TeaCache nodes: declarations, bad input, and calibrate -> fit -> profile end to end."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from comfy_mirror import FlowModel, ModelPatcher
from harness import make_conds, make_patcher, sample
from quadtree_tile.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, teacache_nodes

IDS = {
    "QuadtreeTile_TeaCacheQwenImage": "TeaCache (Qwen-Image)",
    "QuadtreeTile_TeaCacheCalibrate": "TeaCache Calibrate (Qwen-Image)",
    "QuadtreeTile_TeaCacheFit": "TeaCache Fit (Qwen-Image)",
}
DEFAULTS = {"start": 0.0, "end": 1.0, "profile": "uncalibrated", "cache_device": "device", "min_steps": 0,
            "max_consecutive_skips": 0}  # fmt: skip


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(teacache_nodes, "teacache_dir", lambda: tmp_path)
    return tmp_path


def test_nodes_are_registered_with_tooltips_everywhere():
    for node_id, name in IDS.items():
        cls = NODE_CLASS_MAPPINGS[node_id]
        assert NODE_DISPLAY_NAME_MAPPINGS[node_id] == name
        assert cls.CATEGORY == "quadtree_tile/teacache" and cls.DESCRIPTION
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
        for group in cls.INPUT_TYPES().values():
            for spec in group.values():
                assert spec[1].get("tooltip"), (node_id, spec)
    threshold = NODE_CLASS_MAPPINGS["QuadtreeTile_TeaCacheQwenImage"].INPUT_TYPES()["required"]["threshold"][1]
    assert threshold["min"] == 0.0 and threshold["max"] == 5.0  # out-of-range thresholds rejected by ComfyUI
    profile = NODE_CLASS_MAPPINGS["QuadtreeTile_TeaCacheQwenImage"].INPUT_TYPES()["required"]["profile"]
    assert profile[0][0] == "uncalibrated" and "uncalibrated" in profile[1]["tooltip"]


def test_a_model_that_is_not_qwen_image_is_refused():
    other = ModelPatcher(FlowModel(torch.nn.Sequential(torch.nn.Linear(4, 4))))
    with pytest.raises(ValueError, match=r"supports Qwen-Image / Qwen-Image-Edit .* this MODEL's diffusion model is"):
        teacache_nodes.TeaCacheQwenImage().apply(other, threshold=0.2, **DEFAULTS)


def test_start_after_end_is_refused():
    with pytest.raises(ValueError, match="start <= end"):
        teacache_nodes.TeaCacheQwenImage().apply(make_patcher(), threshold=0.2, **{**DEFAULTS, "start": 0.8,
                                                                                   "end": 0.2})  # fmt: skip


def test_missing_or_malformed_profile_is_a_clear_error(user_dir):
    node = teacache_nodes.TeaCacheQwenImage()
    with pytest.raises(FileNotFoundError, match="profiles/gone.json not found"):
        node.apply(make_patcher(), threshold=0.2, **{**DEFAULTS, "profile": "gone"})
    (user_dir / "profiles").mkdir()
    (user_dir / "profiles" / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        node.apply(make_patcher(), threshold=0.2, **{**DEFAULTS, "profile": "broken"})
    with pytest.raises(ValueError, match="not a plain file name"):
        node.apply(make_patcher(), threshold=0.2, **{**DEFAULTS, "profile": "../x"})


def test_calibrate_fit_then_use_the_profile(user_dir):
    base = make_patcher()
    conds = make_conds()
    ref, _ = sample(base, conds)
    (calibrating,) = teacache_nodes.TeaCacheCalibrate().apply(base, "rec", "qwen_image_random.safetensors", "", "p1")
    assert torch.equal(sample(calibrating, conds)[0], ref)  # calibration computes every step
    for seed in (3, 4):
        sample(calibrating, conds, seed=seed)
    doc = json.loads((user_dir / "records" / "rec.json").read_text())
    assert len(doc["runs"]) == 3
    run = doc["runs"][0]
    assert run["model_file"] == "qwen_image_random.safetensors" and run["prompt"] == "p1" and run["steps"] == 12
    assert len(run["records"]) == 22  # 11 step pairs x (cond, uncond)
    assert {r["uuid"] for r in run["records"]} == {str(c.uuid) for c in conds[0] + conds[1]}
    assert all(r["input_change"] > 0 and r["output_change"] > 0 for r in run["records"])
    with pytest.raises(ValueError, match="poor fit"):
        teacache_nodes.TeaCacheFit().fit("rec", "prof", min_r2=0.9999)
    (report,) = teacache_nodes.TeaCacheFit().fit("rec", "prof", min_r2=0.0)
    assert "n=66" in report and "R²=" in report and "RMSE=" in report and "input range" in report
    assert "prof" in teacache_nodes._profiles()
    (patched,) = teacache_nodes.TeaCacheQwenImage().apply(base, threshold=0.0, **{**DEFAULTS, "profile": "prof"})
    assert torch.equal(sample(patched, conds)[0], ref)


def test_min_steps_says_caching_was_off_and_why(caplog):
    base, conds = make_patcher(), make_conds()
    ref, _ = sample(base, conds, steps=4)
    (patched,) = teacache_nodes.TeaCacheQwenImage().apply(base, threshold=5.0, **{**DEFAULTS, "min_steps": 10})
    with caplog.at_level(logging.INFO, logger="comfyui-quadtree-tile"):
        out, _ = sample(patched, conds, steps=4)
    assert torch.equal(out, ref)
    runs = [r.getMessage() for r in caplog.records if r.name == "comfyui-quadtree-tile.teacache"]
    assert len(runs) == 1, runs  # one line for the run, at its end
    assert "caching off for this run: the run has 4 steps, fewer than min_steps=10 (few-step runs" in runs[0]
    assert "none skipped" in runs[0] and "skipped 0 of 0" not in runs[0]
