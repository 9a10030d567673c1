"""Qwen-Image Text Encode's info output lists a VAE copy only when a VAE is connected."""

import sys
import types

import pytest
from quadtree_tile.nodes.qwen_clip_nodes import QwenImageTextEncode
from qwen_clip_helpers import image, qwen_tokenizer
from qwen_clip_mirror import MirrorCLIP, MirrorVAE


@pytest.mark.parametrize("mode", ["edit", "edit-plus"])
def test_the_vae_copy_is_listed_only_with_a_vae(monkeypatch, mode):
    helpers = types.ModuleType("node_helpers")
    helpers.conditioning_set_values = lambda cond, values, append=False: cond
    monkeypatch.setitem(sys.modules, "node_helpers", helpers)
    clip, src = MirrorCLIP(qwen_tokenizer()), image(300, 200)
    _, without = QwenImageTextEncode().encode(clip, "make it blue", "diffusers", mode, image1=src)
    _, with_vae = QwenImageTextEncode().encode(clip, "make it blue", "diffusers", mode, vae=MirrorVAE(), image1=src)
    assert "tokens)" in without and "VAE copy" not in without and "reference latents" not in without
    assert "VAE copy" in with_vae and "reference latents" in with_vae
