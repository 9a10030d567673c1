"""The signal math against diffusers' real QwenImageTransformer2DModel (small config, random weights)."""

from __future__ import annotations

import pytest
import torch
from quadtree_tile.teacache import modulated_input, rel_l1

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def model():
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=64,
        out_channels=16,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        axes_dims_rope=(4, 6, 6),
    ).eval()


def _block0_io(model, x, context, t):
    """Run diffusers' forward; capture block 0's inputs and the tensor its attention receives."""
    seen = {}
    block = model.transformer_blocks[0]
    h1 = block.register_forward_pre_hook(lambda m, a, kw: seen.update(img=kw["hidden_states"], temb=kw["temb"]),
                                         with_kwargs=True)  # fmt: skip
    h2 = block.attn.register_forward_pre_hook(lambda m, a, kw: seen.update(attn_in=kw["hidden_states"]),
                                              with_kwargs=True)  # fmt: skip
    try:
        with torch.no_grad():
            model(hidden_states=x, encoder_hidden_states=context, encoder_hidden_states_mask=torch.ones(1, 7),
                  timestep=t, img_shapes=[(1, 4, 4)], return_dict=False)  # fmt: skip
    finally:
        h1.remove()
        h2.remove()
    return seen


def test_signal_is_what_block0_attention_receives(model):
    x = torch.randn(1, 16, 64)
    seen = _block0_io(model, x, torch.randn(1, 7, 24), torch.tensor([0.7]))
    with torch.no_grad():
        ours = modulated_input(model.transformer_blocks[0], seen["img"], seen["temb"])
    torch.testing.assert_close(ours, seen["attn_in"], rtol=0, atol=1e-6)


def test_signal_is_the_same_for_cond_and_uncond_and_moves_with_the_latent(model):
    x = torch.randn(1, 16, 64)
    t = torch.tensor([0.5])
    a = _block0_io(model, x, torch.randn(1, 7, 24), t)
    b = _block0_io(model, x, torch.randn(1, 7, 24), t)
    c = _block0_io(model, x + 0.1 * torch.randn_like(x), torch.randn(1, 7, 24), t)
    with torch.no_grad():
        sa, sb, sc = (modulated_input(model.transformer_blocks[0], s["img"], s["temb"]) for s in (a, b, c))
    assert torch.equal(sa, sb)  # the text only enters through attention: one decision serves both branches
    assert 0.0 < float(rel_l1(sc, sa)) < 1.0
