"""Statistics pooled over tiles equal the whole image's, including the between-tile variance."""

import torch
from exactness import assert_matches_untiled
from quadtree_tile.tiled_vae.image.groupnorm import GroupStats, group_norm_with_stats


def test_pooled_statistics_equal_whole_image_group_norm():
    x = torch.randn(2, 64, 40, 56)
    x[..., :20, :] += 50.0  # tiles with very different means: the between-tile term matters
    norm = torch.nn.GroupNorm(32, 64, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    stats = GroupStats(32)
    for y in range(0, 40, 16):
        for xx in range(0, 56, 24):
            stats.add(x[..., y : y + 16, xx : xx + 24])
    out = group_norm_with_stats(x, norm, *stats.mean_rstd(norm.eps))
    assert_matches_untiled(out, norm(x))


def test_channels_last_tiles_are_normalised_alike_and_stay_channels_last():
    """Rows from the host store reach the norm channels-last; the result is the same and keeps
    that layout, so the convolution after it needs no conversion either."""
    x = torch.randn(1, 64, 12, 20) * 3 + 1
    norm = torch.nn.GroupNorm(32, 64, eps=1e-6)
    stats = GroupStats(32)
    stats.add(x.to(memory_format=torch.channels_last))
    out = group_norm_with_stats(x.to(memory_format=torch.channels_last), norm, *stats.mean_rstd(norm.eps))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_matches_untiled(out, norm(x))
