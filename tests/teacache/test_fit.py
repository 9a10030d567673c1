"""Rescale clamping, the calibration fit, and profile files (good and malformed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from quadtree_tile.teacache import Rescale, build_profile, fit_polynomial, fit_records, load_profile, save_profile
from quadtree_tile.teacache.records import RECORDS_FORMAT, read_records

TRUE = (-40.0, 30.0, -6.0, 1.5, 0.01)  # x^4..x^0, monotonic on [0, 0.4]


def _records(x, y, **run):
    recs = [{"sigma": 1.0 - i / len(x), "uuid": "u", "input_change": a, "output_change": b} for i, (a, b) in
            enumerate(zip(x, y, strict=True))]  # fmt: skip
    return {"format": RECORDS_FORMAT, "version": 1, "runs": [{**run, "records": recs}]}


def test_fit_recovers_a_known_polynomial():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 0.4, 400)
    y = np.polyval(TRUE, x) + rng.normal(0, 1e-3, x.size)
    fit = fit_records(_records(x, y), min_r2=0.9)
    assert fit.n == 400 and fit.r2 > 0.999 and fit.rmse < 2e-3
    assert 0.0 <= fit.x_min < 0.01 and 0.39 < fit.x_max <= 0.4
    grid = np.linspace(0, 0.4, 50)
    assert np.abs(np.polyval(fit.coefficients, grid) - np.polyval(TRUE, grid)).max() < 5e-3


def test_fit_refuses_noise_and_too_few_pairs():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 0.4, 200)
    with pytest.raises(ValueError, match=r"poor fit, R²=0\.\d+ < min_r2=0\.8"):
        fit_records(_records(x, rng.uniform(0, 1, 200)), min_r2=0.8)
    with pytest.raises(ValueError, match="10 step pairs, need at least 50"):
        fit_records(_records(x[:10], x[:10]), min_r2=0.8)
    with pytest.raises(ValueError, match="distinct inputs"):
        fit_polynomial(np.ones(20), np.arange(20.0))


def test_rescale_clamps_to_the_fitted_range_and_never_goes_negative():
    r = Rescale((-450.0, 280.0, -45.0, 3.2, -0.02), 0.0, 0.3, label="p")
    assert r(0.9) == r(0.3) > 0  # clamped: beyond the range the polynomial would go negative
    assert r(0.0) == 0.0  # poly(0) = -0.02, floored
    assert Rescale()(0.123) == 0.123 and not Rescale().calibrated
    with pytest.raises(ValueError, match="0 <= min < max"):
        Rescale((1.0, 0.0), 0.5, 0.1)


def test_profile_round_trip_records_provenance(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.uniform(0.0, 0.4, 100)
    doc = _records(x, np.polyval(TRUE, x), model_file="qwen_image_fp8.safetensors", loras="lightning 0.5",
                   dtype="torch.bfloat16", steps=30, sampler="sample_euler", shift=3.1, resolution=[1328, 1328],
                   prompt="a poster", date="2025-10-01T00:00:00+00:00")  # fmt: skip
    fit = fit_records(doc, min_r2=0.9)
    path = tmp_path / "mine.json"
    save_profile(path, build_profile(fit, doc, "rec.json"))
    saved = json.loads(path.read_text())
    prov = saved["provenance"]
    assert prov["model_files"] == ["qwen_image_fp8.safetensors"] and prov["loras"] == ["lightning 0.5"]
    assert prov["steps"] == [30] and prov["shifts"] == [3.1] and prov["resolutions"] == [[1328, 1328]]
    assert prov["prompts"] == ["a poster"] and prov["dtypes"] == ["torch.bfloat16"] and prov["samplers"]
    assert saved["fit"]["n"] == 100 and saved["fit"]["r2"] > 0.99
    r = load_profile(path)
    assert r.calibrated and r.label == "mine" and r.coefficients == fit.coefficients
    assert (r.x_min, r.x_max) == (fit.x_min, fit.x_max)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"format": "other"}', "is not a profile"),
        ('{"format": "quadtree-tile-teacache-profile", "model_family": "wan"}', "is for 'wan'"),
        ('{"format": "quadtree-tile-teacache-profile", "model_family": "qwen-image", "coefficients": [1, 2]}',
         "needs 'coefficients'"),
    ],
)  # fmt: skip
def test_malformed_profile_is_a_clear_error(tmp_path, text, match):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_profile(path)
    with pytest.raises(FileNotFoundError, match="not found; pick another profile"):
        load_profile(tmp_path / "absent.json")


def test_malformed_records_are_a_clear_error(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{"format": "quadtree-tile-teacache-records", "runs": [{"records": [{"sigma": 1}]}]}')
    with pytest.raises(ValueError, match="run 0 has no valid 'records'"):
        read_records(path)
    with pytest.raises(FileNotFoundError, match="run a workflow with 'TeaCache Calibrate"):
        read_records(tmp_path / "none.json")
