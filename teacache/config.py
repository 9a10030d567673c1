"""Settings of one TeaCache or calibration patch, validated once when the node runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from .rescale import Rescale

CACHE_DEVICES = ("device", "cpu")
MODES = ("cache", "calibrate")


@dataclass(frozen=True)
class TeaCacheConfig:
    """What a patched model does during sampling.

    ``threshold``: skip while the accumulated (rescaled) input change stays below it; 0 never skips.
    ``start``/``end``: the part of the run's sigma schedule (0 = first step, 1 = the end) in which
    steps may be skipped. ``min_steps``: runs with fewer steps are left untouched. ``max_skips``:
    most consecutive skipped steps (0: no limit). ``cache_device``: ``"device"`` keeps residuals
    where the model runs, ``"cpu"`` in system memory. ``mode="calibrate"`` computes every step and
    records (sigma, uuid, input change, output change) to ``record_path`` with ``provenance``.
    """

    threshold: float = 0.0
    start: float = 0.0
    end: float = 1.0
    rescale: Rescale = field(default_factory=Rescale)
    cache_device: str = "device"
    min_steps: int = 10
    max_skips: int = 0
    mode: str = "cache"
    record_path: str | None = None
    provenance: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        where = "TeaCache (Qwen-Image)"
        if self.threshold < 0.0:
            raise ValueError(f"{where}: threshold must be >= 0, got {self.threshold}")
        if not (0.0 <= self.start <= 1.0 and 0.0 <= self.end <= 1.0 and self.start <= self.end):
            raise ValueError(
                f"{where}: need 0 <= start <= end <= 1, got start={self.start}, end={self.end}; set start below end"
            )
        if self.cache_device not in CACHE_DEVICES:
            raise ValueError(f"{where}: cache_device must be one of {CACHE_DEVICES}, got {self.cache_device!r}")
        if self.min_steps < 0 or self.max_skips < 0:
            raise ValueError(f"{where}: min_steps and max_skips must be >= 0, got {self.min_steps}, {self.max_skips}")
        if self.mode not in MODES:
            raise ValueError(f"{where}: mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "calibrate" and not self.record_path:
            raise ValueError(f"{where}: calibration needs a record file path")
