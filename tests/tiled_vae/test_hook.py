"""The hook passes every argument through, falls back safely, and always restores the module."""

import pytest
import torch
from quadtree_tile.tiled_vae import MethodHook, TilingConfig, tiled
from vae_models import comfy_pair


class Recorder(torch.nn.Module):
    """A module no family recognises; it records what its forward received."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, *extra, **kwargs):
        self.calls.append((extra, kwargs))
        return x * 2


def test_unknown_module_runs_untiled_with_every_argument():
    m = Recorder()
    cache = [None, None]
    with tiled(m, TilingConfig(mode="tiled")) as hook:
        out = m(torch.ones(1, 3, 4, 4), "positional", feat_cache=cache, feat_idx=[0], first_chunk=True)
    assert torch.equal(out, torch.full((1, 3, 4, 4), 2.0))
    assert m.calls == [(("positional",), {"feat_cache": cache, "feat_idx": [0], "first_chunk": True})]
    assert hook.handler.report.reason.startswith("no registered VAE family")
    assert "forward" not in m.__dict__


def test_known_decoder_with_extra_keyword_gets_the_untiled_call_with_it():
    """An argument the tiled path cannot honour goes to the original forward, which sees it."""
    _, dec = comfy_pair()
    z = torch.randn(1, 4, 16, 16)
    with pytest.raises(TypeError) as untiled_error:
        dec(z, some_option=3)  # the mirror, like ComfyUI, forwards it to blocks that refuse it
    with pytest.raises(TypeError) as hooked_error, tiled(dec, TilingConfig(tile_size=64, mode="tiled")) as hook:
        dec(z, some_option=3)
    assert str(hooked_error.value) == str(untiled_error.value)
    assert "some_option" in str(hooked_error.value)
    assert "arguments the tiled path does not take" in hook.handler.report.reason
    assert "forward" not in dec.__dict__


def test_hook_removed_after_exception_inside_a_tile():
    _, dec = comfy_pair()
    z = torch.randn(1, 4, 24, 24)
    with torch.no_grad():
        before = dec(z)
    ticks = []

    def fail_at_third_tile():
        ticks.append(1)
        if len(ticks) == 3:
            raise KeyboardInterrupt("user interrupt")

    with (
        pytest.raises(KeyboardInterrupt),
        tiled(dec, TilingConfig(tile_size=64, mode="tiled"), check_interrupt=fail_at_third_tile),
    ):
        dec(z)
    assert "forward" not in dec.__dict__
    with torch.no_grad():
        assert torch.equal(dec(z), before)


def test_existing_instance_forward_is_restored():
    m = Recorder()

    def other_pack_forward(x):
        return x + 1

    m.forward = other_pack_forward
    with MethodHook(m, lambda original, x: original(x) * 10):
        assert torch.equal(m(torch.zeros(1)), torch.full((1,), 10.0))
    assert m.forward is other_pack_forward


def test_progress_reports_every_tile_up_to_the_total():
    _, dec = comfy_pair()
    seen = []
    with (
        torch.no_grad(),
        tiled(dec, TilingConfig(tile_size=64, mode="tiled"), progress=lambda d, t: seen.append((d, t))),
    ):
        dec(torch.randn(1, 4, 16, 24))
    total = seen[-1][1]
    assert [d for d, _ in seen] == list(range(1, total + 1))
    assert all(t == total for _, t in seen)
