"""Fit TeaCache's degree-4 rescale polynomial to calibration records, and judge the fit."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

DEGREE = 4
MIN_PAIRS = 50


@dataclass(frozen=True)
class FitResult:
    """A fitted polynomial (highest power first) with its quality and the input range it is valid on."""

    coefficients: tuple[float, ...]
    n: int
    r2: float
    rmse: float
    x_min: float
    x_max: float

    def summary(self) -> str:
        """One line for logs and the node's STRING output."""
        return (
            f"n={self.n}, R²={self.r2:.4f}, RMSE={self.rmse:.4g}, input range [{self.x_min:.4g}, {self.x_max:.4g}], "
            f"coefficients (x^4..x^0) {', '.join(f'{c:.6g}' for c in self.coefficients)}"
        )


def fit_polynomial(x: np.ndarray, y: np.ndarray, degree: int = DEGREE) -> FitResult:
    """Least-squares ``np.polyfit`` of ``y`` on ``x`` with R² and RMSE on the same points."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"fit: x and y must be 1-D and the same length, got {x.shape} and {y.shape}")
    if x.size <= degree or np.ptp(x) == 0:
        raise ValueError(f"fit: need more than {degree} points with distinct inputs, got {x.size}")
    coefficients = np.polyfit(x, y, degree)
    pred = np.polyval(coefficients, x)
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    return FitResult(
        coefficients=tuple(float(c) for c in coefficients),
        n=int(x.size),
        r2=r2,
        rmse=math.sqrt(ss_res / x.size),
        x_min=float(x.min()),
        x_max=float(x.max()),
    )


def pairs_from_records(doc: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """All finite (input change, output change) pairs of every run in a records document."""
    xs, ys = [], []
    for run in doc["runs"]:
        for r in run["records"]:
            x, y = float(r["input_change"]), float(r["output_change"])
            if math.isfinite(x) and math.isfinite(y):
                xs.append(x)
                ys.append(y)
    return np.array(xs), np.array(ys)


def fit_records(doc: dict[str, Any], min_r2: float, min_pairs: int = MIN_PAIRS, source: str = "records") -> FitResult:
    """Fit the records; raise ``ValueError`` when there are too few pairs or R² is below ``min_r2``."""
    x, y = pairs_from_records(doc)
    if x.size < min_pairs:
        raise ValueError(
            f"TeaCache fit ({source}): {x.size} step pairs, need at least {min_pairs}; record more runs "
            "(several prompts from the shipped list, the step count you use)"
        )
    fit = fit_polynomial(x, y)
    if fit.r2 < min_r2:
        raise ValueError(
            f"TeaCache fit ({source}): poor fit, R²={fit.r2:.3f} < min_r2={min_r2} ({fit.summary()}); the input change "
            "does not predict the output change well for these runs. Record runs with one model, sampler and step "
            "count, or lower min_r2 knowingly"
        )
    return fit
