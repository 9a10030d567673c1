"""The check every tiling test makes: the tiled output is what the untiled model returns, up to float rounding."""

from __future__ import annotations

import torch

TOL = 1e-4
"""Max abs difference allowed in fp32 (float summation order differs between tile shapes)."""


def assert_matches_untiled(out: torch.Tensor, ref: torch.Tensor, tol: float = TOL) -> None:
    """``out`` has ``ref``'s shape, is finite, and is within ``tol`` of it everywhere."""
    assert out.shape == ref.shape, f"tiled output has shape {tuple(out.shape)}, untiled {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), "tiled output holds NaN or inf"
    diff = (out.float() - ref.float()).abs().max().item()
    assert diff <= tol, f"tiled output differs from untiled by {diff:.3g} (max abs), more than {tol:.0e}"
