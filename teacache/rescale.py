"""Map the change of block 0's modulated input to a predicted change of the model output."""

from __future__ import annotations

import math
from dataclasses import dataclass

UNCALIBRATED = "uncalibrated"


@dataclass(frozen=True)
class Rescale:
    """TeaCache's rescale of the relative L1 input change ``rel`` into an accumulator increment.

    With ``coefficients`` (highest power first, the ``np.poly1d`` order of a degree-4 fit) the
    increment is ``poly(clamp(rel, x_min, x_max))``, floored at 0: a polynomial is only valid on the
    range it was fitted on and can turn negative outside it, which would make a large input change
    *encourage* skipping. Without coefficients the increment is ``rel`` itself, the calibration-free
    mode labelled :data:`UNCALIBRATED`: the threshold is then in units of raw input change.
    """

    coefficients: tuple[float, ...] | None = None
    x_min: float = 0.0
    x_max: float = math.inf
    label: str = UNCALIBRATED

    def __post_init__(self) -> None:
        if self.coefficients is not None:
            if not self.coefficients or not all(math.isfinite(c) for c in self.coefficients):
                raise ValueError(
                    f"rescale '{self.label}': coefficients must be finite numbers, got {self.coefficients}"
                )
            if not (math.isfinite(self.x_min) and math.isfinite(self.x_max) and 0 <= self.x_min < self.x_max):
                raise ValueError(
                    f"rescale '{self.label}': input range must satisfy 0 <= min < max, got [{self.x_min}, {self.x_max}]"
                )

    @property
    def calibrated(self) -> bool:
        """True when a fitted polynomial maps the input change (False: the uncalibrated identity)."""
        return self.coefficients is not None

    def __call__(self, rel: float) -> float:
        if self.coefficients is None:
            return max(rel, 0.0)
        x = min(max(rel, self.x_min), self.x_max)
        y = 0.0
        for c in self.coefficients:
            y = y * x + c
        return max(y, 0.0)
