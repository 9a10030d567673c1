"""How the tiler treats the hosts' chunk calls: the time cache, every keyword argument, progress."""

import inspect
import types

import torch
from diffusers import AutoencoderKLWan
from exactness import assert_matches_untiled
from quadtree_tile.tiled_vae import TilingConfig, tiled
from wan_models import comfy_wan21, comfy_wan22, decode_frames, randomise


def _run_loop(decoder, z):
    """The host loop, returning the output and the cache list and index list of the last call."""
    cache = [None] * sum(1 for m in decoder.modules() if isinstance(m, torch.nn.Conv3d))
    frames, idx = [], None
    takes_first = "first_chunk" in inspect.signature(type(decoder).forward).parameters
    for i in range(z.shape[2]):
        idx = [0]
        extra = {"first_chunk": True} if i == 0 and takes_first else {}
        frames.append(decoder(z[:, :, i : i + 1], feat_cache=cache, feat_idx=idx, **extra))
    return torch.cat(frames, 2), cache, idx


def test_cache_list_ends_as_the_untiled_run_leaves_it():
    pair = comfy_wan21()
    z = torch.randn(1, 4, 3, 5, 6)
    with torch.no_grad():
        _, ref_cache, ref_idx = _run_loop(pair.decoder, z)
        with tiled(pair.decoder, TilingConfig(tile_size=24, mode="tiled")):
            _, cache, idx = _run_loop(pair.decoder, z)
    assert idx == ref_idx and idx[0] > 0
    for mine, theirs in zip(cache, ref_cache, strict=True):
        if isinstance(theirs, torch.Tensor):
            assert mine.shape == theirs.shape
            assert_matches_untiled(mine, theirs)
        else:
            assert mine == theirs  # None or the 'Rep' marker


def test_a_second_decode_with_the_same_hook_starts_fresh():
    pair = comfy_wan22()
    z1, z2 = torch.randn(1, 4, 2, 5, 6), torch.randn(1, 4, 1, 5, 6)
    with torch.no_grad():
        refs = [decode_frames(pair.decoder, z) for z in (z1, z2)]
        with tiled(pair.decoder, TilingConfig(tile_size=24, mode="tiled")):
            outs = [decode_frames(pair.decoder, z) for z in (z1, z2)]
    for out, ref in zip(outs, refs, strict=True):
        assert_matches_untiled(out, ref)


def _spy(module):
    """Record every call's arguments on the way to the real forward (a bound method, like forward)."""
    seen = []
    real = type(module).forward

    def forward(self, *args, **kwargs):
        seen.append((len(args), dict(kwargs)))
        return real(self, *args, **kwargs)

    module.forward = types.MethodType(forward, module)
    return seen


def test_untiled_paths_pass_every_keyword_argument():
    pair = comfy_wan22()
    z = torch.randn(1, 4, 2, 5, 6)
    for config in (TilingConfig(mode="untiled"), TilingConfig(mode="auto", tile_size=512)):
        seen = _spy(pair.decoder)
        try:
            with torch.no_grad(), tiled(pair.decoder, config) as hook:
                _, cache, idx = _run_loop(pair.decoder, z)
        finally:
            del pair.decoder.forward
        assert not hook.handler.report.tiled
        assert [set(kw) for _, kw in seen] == [{"feat_cache", "feat_idx", "first_chunk"}, {"feat_cache", "feat_idx"}]
        assert seen[0][1]["first_chunk"] is True
        assert seen[0][1]["feat_cache"] is cache and idx[0] > 0


def test_diffusers_host_decode_through_the_hook_matches():
    """diffusers' own ``AutoencoderKLWan.decode`` (Wan 2.2 layout: keyword calls and ``first_chunk``)."""
    vae = randomise(
        AutoencoderKLWan(
            base_dim=4, decoder_base_dim=4, z_dim=4, is_residual=True, in_channels=12, out_channels=12, patch_size=2
        )
    )
    z = torch.randn(1, 4, 2, 5, 7) * 0.1
    with torch.no_grad():
        ref = vae.decode(z).sample
        with tiled(vae.decoder, TilingConfig(tile_size=16, mode="tiled")) as hook:
            out = vae.decode(z).sample
    assert hook.handler.report.tiled
    assert_matches_untiled(out, ref)


def test_progress_counts_up_to_the_whole_decode():
    pair = comfy_wan21()
    z = torch.randn(1, 4, 2, 5, 6)
    ticks = []
    hook = tiled(pair.decoder, TilingConfig(tile_size=24, mode="tiled"), progress=lambda d, t: ticks.append((d, t)))
    with torch.no_grad(), hook:
        decode_frames(pair.decoder, z)
    done = [d for d, _ in ticks]
    assert done == list(range(1, len(ticks) + 1))
    assert all(d <= t for d, t in ticks)
    assert ticks[-1][0] == ticks[-1][1]
    assert ticks[0][1] == ticks[-1][1]  # the total is known from the first tile on (frames of the clip)
