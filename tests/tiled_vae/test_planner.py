"""Plans partition the image exactly, respect the tile budget and alignment, and adapt to detail."""

import pytest
import torch
from quadtree_tile.tiled_vae import detail_map, grid_plan, quadtree_plan


def coverage(plan, h, w):
    count = torch.zeros(h, w, dtype=torch.int32)
    for r in plan:
        count[r.y0 : r.y1, r.x0 : r.x1] += 1
    return count


@pytest.mark.parametrize("size", [(360, 568), (64, 64), (1000, 24), (8, 8), (1025, 777)])
@pytest.mark.parametrize("planner", ["grid", "quadtree"])
def test_every_pixel_in_exactly_one_tile_and_within_budget(size, planner):
    h, w = size
    tile, align = 128, 8
    if planner == "grid":
        plan = grid_plan(h, w, tile, align)
    else:
        detail = torch.rand((h + align - 1) // align, (w + align - 1) // align)
        plan = quadtree_plan(h, w, tile, align, detail, min_tile=32)
    assert torch.equal(coverage(plan, h, w), torch.ones(h, w, dtype=torch.int32))
    for r in plan:
        assert r.height <= tile and r.width <= tile
        for edge, end in ((r.y0, h), (r.y1, h), (r.x0, w), (r.x1, w)):
            assert edge % align == 0 or edge == end


def test_quadtree_splits_busy_regions_and_keeps_flat_ones_large():
    h = w = 512
    detail = torch.zeros(64, 64)
    detail[:16, :16] = 10.0  # busy top-left corner
    plan = quadtree_plan(h, w, tile=256, align=8, detail=detail, min_tile=32)
    busy = [r for r in plan if r.y1 <= 128 and r.x1 <= 128]
    flat = [r for r in plan if r.y0 >= 256 and r.x0 >= 256]
    assert max(r.area for r in busy) <= 64 * 64
    assert [r.area for r in flat] == [256 * 256]
    assert min(r.height for r in plan) >= 32


def test_detail_map_is_per_cell_and_channel_normalised():
    x = torch.zeros(1, 2, 16, 16)
    x[:, 0, :8, :8] = torch.randn(8, 8) * 1000  # huge-scale channel, busy only top-left
    x[:, 1] = torch.randn(16, 16) * 0.001  # tiny-scale channel, busy everywhere
    d = detail_map(x, 8)
    assert d.shape == (2, 2)
    assert d[0, 0] > d[1, 1] > 0  # the tiny channel still counts after normalisation


def test_tile_smaller_than_alignment_is_refused():
    with pytest.raises(ValueError, match="at least 8 px"):
        grid_plan(64, 64, tile=4, align=8)
