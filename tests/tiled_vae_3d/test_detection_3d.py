"""Which family claims which module: by structure, every layout, and nothing else."""

import logging

import pytest
import torch
from mirrors import comfy_wan_vae as mirror
from quadtree_tile.tiled_vae import TilingConfig, detect, tiled
from quadtree_tile.tiled_vae.families import comfy_2d, diffusers_2d
from wan_models import LAYOUTS, randomise

EXPECTED = {
    "comfyui-wan21": ("comfyui-wan21-decoder", "comfyui-wan21-encoder"),
    "comfyui-wan22": ("comfyui-wan22-decoder", "comfyui-wan22-encoder"),
    "diffusers-wan21": ("diffusers-wan-decoder", "diffusers-wan-encoder"),
    "diffusers-wan22": ("diffusers-wan-decoder", "diffusers-wan-encoder"),
    "diffusers-qwenimage": ("diffusers-wan-decoder", "diffusers-wan-encoder"),
}


@pytest.mark.parametrize("layout", sorted(EXPECTED))
def test_detection_table(layout):
    pair = LAYOUTS[layout]()
    dec, enc = detect(pair.decoder), detect(pair.encoder)
    assert (dec.name, enc.name) == EXPECTED[layout]
    assert (dec.dims, dec.role, enc.dims, enc.role) == (3, "decoder", 3, "encoder")
    for module in (pair.decoder, pair.encoder):  # the 2D detectors never claim a 3D VAE
        assert not any(f(module) for f in (comfy_2d.is_decoder, comfy_2d.is_encoder))
        assert not any(f(module) for f in (diffusers_2d.is_decoder, diffusers_2d.is_encoder))


class _Unknown3d(torch.nn.Module):
    """A 3D decoder with a causal conv1 but no middle block: an unknown layout."""

    def __init__(self):
        super().__init__()
        self.conv1 = mirror.CausalConv3d(4, 3, 3, padding=1)
        self.head = torch.nn.Sequential(mirror.CausalConv3d(3, 3, 3, padding=1))

    def forward(self, x, feat_cache=None, feat_idx=[0]):  # noqa: B006 - the hosts' signature
        return self.head(self.conv1(x))


def test_unknown_3d_layout_runs_untiled_with_a_warning_naming_it(caplog):
    dec = _Unknown3d()
    z = torch.randn(1, 4, 1, 6, 6)
    cache = [None, None]
    with torch.no_grad():
        ref = dec(z, feat_cache=cache, feat_idx=[0])
        with caplog.at_level(logging.INFO, "comfyui-quadtree-tile"), tiled(dec, TilingConfig(mode="tiled")):
            out = dec(z, feat_cache=cache, feat_idx=[0])
    assert torch.equal(out, ref)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "_Unknown3d is not a VAE encoder or decoder this pack can tile" in record.message
    assert "conv1, downsamples/upsamples, middle, head" in record.message  # what the detectors looked for


def test_attention_at_a_tiled_level_runs_untiled_with_a_log_line(caplog):
    """``attn_scales`` puts attention in the up path (the hosts can only run it without a time cache)."""
    vae = randomise(mirror.WanVAE(dim=8, z_dim=4, attn_scales=(0.5,)))
    z = torch.randn(1, 4, 1, 5, 6)
    with torch.no_grad():
        ref = vae.decoder(z)
        hook = tiled(vae.decoder, TilingConfig(tile_size=16, mode="tiled"))
        with caplog.at_level(logging.INFO, "comfyui-quadtree-tile"), hook:
            out = vae.decoder(z)
    assert not hook.handler.report.tiled
    assert torch.equal(out, ref)
    assert "attention at a tiled resolution" in caplog.text
