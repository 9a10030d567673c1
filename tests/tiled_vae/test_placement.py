"""Where a run keeps its full-size activations: within the device budget, host bytes shared only
between values that are never alive together, bands that cut the image like a plan must, and
GroupNorm statistics that never need an extra pass over the store."""

import pytest
import torch
from diffusers import AutoencoderKL
from quadtree_tile.benchmarks.common import SDXL_CLASS_CONFIG
from quadtree_tile.benchmarks.tensor_memory import on_meta
from quadtree_tile.tiled_vae.families import detect
from quadtree_tile.tiled_vae.image.engine import Engine, RunOptions
from quadtree_tile.tiled_vae.image.placement import band_plan, place
from vae_models import comfy_pair, diffusers_pair

GIB = 2**30


@pytest.fixture(scope="module")
def sdxl_decoder_program():
    dec = on_meta(lambda: AutoencoderKL(**SDXL_CLASS_CONFIG)).decoder
    return detect(dec).build(dec)


@pytest.mark.parametrize("budget_gib", [0.0, 0.5, 2.0, 3.5])
def test_device_values_fit_the_budget_at_every_step(sdxl_decoder_program, budget_gib):
    placement = place(sdxl_decoder_program, 1, (2048, 2048), 2, budget_gib * GIB)
    assert placement.device_bytes() <= budget_gib * GIB
    assert placement.spills()
    on_device = [v for v in placement.values[1:] if not v.on_host]
    if budget_gib >= 0.5:  # the smallest values, the latent level's, stay on the device
        assert all(not v.on_host for v in placement.values[1:] if v.level == 3)
        assert on_device


def test_host_values_alive_together_never_share_bytes(sdxl_decoder_program):
    placement = place(sdxl_decoder_program, 1, (2048, 2048), 2, 0.0)
    host = [v for v in placement.values if v.on_host]
    for a in host:
        for b in host:
            if a is not b and a.overlaps(b):
                assert a.offset + a.nbytes <= b.offset or b.offset + b.nbytes <= a.offset
    assert max(v.offset + v.nbytes for v in host) <= placement.arena_bytes
    assert placement.arena_bytes < 0.6 * sum(v.nbytes for v in host)  # values reuse each other's bytes


def test_everything_fits_with_no_budget_limit(sdxl_decoder_program):
    placement = place(sdxl_decoder_program, 1, (2048, 2048), 2, float("inf"))
    assert not placement.spills() and placement.arena_bytes == 0
    assert placement.device_bytes() == 4 * GIB  # the 2048² SDXL-class decode keeps at most 4 GiB alive


@pytest.mark.parametrize("size", [(2048, 2048), (360, 568), (1000, 24), (8, 8), (1025, 777), (64, 40000)])
def test_bands_are_full_width_aligned_and_cover_the_image_once(size):
    h, w = size
    tile, align = 512, 8
    bands = band_plan(size, tile, align)
    assert bands[0].y0 == 0 and bands[-1].y1 == h
    for a, b in zip(bands, bands[1:], strict=False):
        assert a.y1 == b.y0 and a.y1 % align == 0
    for r in bands:
        assert (r.x0, r.x1) == (0, w) and r.height > 0
        assert r.area <= tile * tile or r.height <= align  # a tile's area, or one aligned row for very wide images


@pytest.mark.parametrize("layout", [comfy_pair, diffusers_pair])
def test_every_groupnorm_gets_its_statistics_from_the_step_that_wrote_its_input(layout):
    for module in layout():
        program = detect(module).build(module)
        assert place(program, 1, (64, 64), 4, 0.0).stats_gathered == []


def test_successive_steps_walk_the_bands_in_opposite_orders():
    """Zigzag: a step starts on the band the last one ended on, still on the device."""
    _, dec = comfy_pair()
    program = detect(dec).build(dec)
    full = (192, 320)
    engine = Engine(program, band_plan(full, 64, 8), full, RunOptions(torch.device("cpu")), torch.float32)
    banded = [(s, c) for s, c in zip(program.steps, engine.cores, strict=True) if c is not None and len(c) > 1]
    assert len(banded) > 10
    for (a, first), (b, second) in zip(banded, banded[1:], strict=False):
        if a.out_level == b.out_level:
            assert second[0] == first[-1]
            assert second == first[::-1] or second[-1] != first[-1]
