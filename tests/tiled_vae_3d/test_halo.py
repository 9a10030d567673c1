"""The windows a tile reads come from the modules' measured reach: checked by perturbation.

Per stage: perturbing one input row (or column) changes the output pixel a one-pixel core keeps
exactly when the row lies in the window the stage's reach gives (a stride-2 stage's window may be
one pixel wider each side: it starts and ends on even pixels). Per path: perturbing the input just
outside the first window of a tile leaves the tile's output untouched, so the windows are wide
enough for an exact result.
"""

import pytest
import torch
from quadtree_tile.tiled_vae import detect
from quadtree_tile.tiled_vae.geometry import Rect, level_sizes
from quadtree_tile.tiled_vae.video.windows import chain_for, run_chain, stage_window
from wan_models import LAYOUTS


def _body(layout: str, role: str, side: int = 16):
    """The program, the stages of its resolution-changing tiled run, and the frame sizes for a frame
    of ``side`` latent pixels."""
    module = getattr(LAYOUTS[layout](), role)
    program = detect(module).build(module)
    sizes = level_sizes(side << program.levels, side << program.levels, program.levels)
    run = next(r for r in program.runs() if r.tiled and r.stages[0].level != r.stages[-1].out_level)
    return program, run.stages, sizes


def _run(stages, x, sizes, program, keep: Rect) -> torch.Tensor:
    """The stages on the whole frame ``x``, through the host's cache protocol, cut to ``keep``."""
    whole = Rect(0, sizes[stages[-1].out_level][0], 0, sizes[stages[-1].out_level][1])
    chain = chain_for(stages, whole, sizes)
    start = program.slots_before(program.stages.index(stages[0]))
    with torch.no_grad():
        y = run_chain(stages, chain, x, sizes, [None] * 200, [start], True)
    return y[(..., *keep.slices())]


def _units(body):
    """The body's stages one by one, except that a Wan 2.2 block group (from the stage that keeps its
    input to the one that adds its shortcut) is one unit."""
    units, group = [], None
    for stage in body:
        if group is None and not stage.keeps_input:
            units.append([stage])
            continue
        group = (group or []) + [stage]
        if stage.shortcut is not None:
            units.append(group)
            group = None
    return units


def _reaches(stages, sizes, program, core: Rect, rows: list[int]) -> list[bool]:
    """For each input row: does perturbing it change the output over ``core``?"""
    x = torch.randn(1, stages[0].c_in, 1, *sizes[stages[0].level])
    ref = _run(stages, x, sizes, program, core)
    changed = []
    for y in rows:
        xp = x.clone()
        xp[..., y, :] += 1.0
        changed.append(not torch.equal(_run(stages, xp, sizes, program, core), ref))
    return changed


@pytest.mark.parametrize("layout", ["comfyui-wan21", "comfyui-wan22", "diffusers-qwenimage"])
@pytest.mark.parametrize("role", ["decoder", "encoder"])
def test_each_stage_reads_exactly_its_reach(layout, role):
    program, body, sizes = _body(layout, role)
    for unit in _units(body):
        out_h = sizes[unit[-1].out_level][0]
        c = out_h // 2
        core = Rect(c, c + 1, c, c + 1)
        w = chain_for(unit, core, sizes).windows[0]
        slack = 1 if any(s.geometry == "down" for s in unit) else 0
        rows = [w.y0 - 1, w.y0, w.y0 + slack, w.y1 - 1 - slack, w.y1 - 1, w.y1]
        above, top, near_top, near_bottom, bottom, below = _reaches(unit, sizes, program, core, rows)
        assert not above and not below, f"{unit[0].name}: a row outside its window {w} reaches the output"
        assert (top or near_top) and (bottom or near_bottom), f"{unit[0].name}: its window {w} is wider than its reach"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_nothing_outside_a_tiles_first_window_reaches_its_output(layout):
    program, body, sizes = _body(layout, "decoder", side=40)
    level = body[0].level
    out = sizes[body[-1].out_level]
    core = Rect(out[0] // 2, out[0] // 2 + 8, out[1] // 2, out[1] // 2 + 8)
    window = chain_for(body, core, sizes).windows[0]
    assert window.y0 > 0 and window.x1 < sizes[level][1], "the probe frame must be larger than the window"
    x = torch.randn(1, body[0].c_in, 1, *sizes[level])
    ref = _run(body, x, sizes, program, core)
    rows, cols = (window.y0 - 1, window.y1), (window.x0 - 1, window.x1)
    for where in [(r, slice(None)) for r in rows] + [(slice(None), c) for c in cols]:
        xp = x.clone()
        xp[(..., *where)] += 10.0
        assert torch.equal(_run(body, xp, sizes, program, core), ref), where
    xp = x.clone()
    xp[..., (window.y0 + window.y1) // 2, :] += 10.0  # and through the middle of the window, it does
    assert not torch.equal(_run(body, xp, sizes, program, core), ref)


def test_the_window_a_stage_reads_is_its_core_grown_by_its_reach():
    """stage_window for the three geometries, by hand: a residual block of reach 2, a 2x upsampler
    whose convolution reaches 1 output pixel, a stride-2 downsampler (even edges)."""
    program, body, sizes = _body("comfyui-wan21", "decoder")
    same = next(s for s in body if s.geometry == "same" and s.reach_in == 2)
    up = next(s for s in body if s.geometry == "up")
    core = Rect(10, 12, 20, 21)
    assert stage_window(same, core, (100, 100)) == Rect(8, 14, 18, 23)
    r = up.reach_in
    assert stage_window(up, core, (100, 100)) == Rect((10 - 1) // 2 - r, 7 + r, 9 - r, 11 + r)
    _, enc, _ = _body("comfyui-wan21", "encoder")
    down = next(s for s in enc if s.geometry == "down")
    window = stage_window(down, Rect(5, 6, 5, 6), (100, 100))
    assert window.y0 % 2 == 0 and window.y1 % 2 == 0
    assert window.y0 <= 10 - down.reach_in and window.y1 >= 13 + down.reach_in
