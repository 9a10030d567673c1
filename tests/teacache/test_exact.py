"""TeaCache on the mirrored Qwen-Image model, sampled the way ComfyUI samples: exactness and CFG."""

from __future__ import annotations

import gc
import logging
import weakref

import pytest
import torch
from harness import make_conds, make_patcher, sample, teacache
from quadtree_tile.teacache.hooks import RUN_KEY, TEACACHE_KEY, TeaCacheRun


@pytest.fixture(scope="module")
def patcher():
    return make_patcher()


@pytest.fixture(scope="module")
def conds():
    return make_conds()


def _summary(caplog) -> str:
    lines = [r.getMessage() for r in caplog.records if "computed" in r.getMessage()]
    assert lines, "no run summary logged"
    return lines[-1]


class _Spy:
    """A DIFFUSION_MODEL wrapper installed after TeaCache's (so it runs inside it): sees the live run."""

    def __init__(self) -> None:
        self.runs: list[TeaCacheRun] = []
        self.calls: list[dict] = []

    def __call__(self, executor, *args, **kwargs):
        run = args[-1].get(RUN_KEY)
        if run is not None and run not in self.runs:
            self.runs.append(run)
        residuals = {u: r.clone() for u, r in run.residuals.items()} if run is not None else {}
        out = executor(*args, **kwargs)
        skip = run is not None and run.call is not None and run.call.skip
        self.calls.append({"args": args, "kwargs": kwargs, "residuals": residuals, "out": out, "skip": skip})
        return out


def _with_spy(p):
    spy = _Spy()
    p.add_wrapper_with_key("diffusion_model", "test-spy", spy)
    return spy


@pytest.mark.parametrize("batched", [True, False])
def test_threshold_zero_identical_at_every_step(patcher, conds, batched, caplog):
    ref, ref_steps = sample(patcher, conds, batched=batched)
    with caplog.at_level(logging.INFO, logger="comfyui-quadtree-tile"):
        out, steps = sample(teacache(patcher, 0.0), conds, batched=batched)
    assert all(torch.equal(a, b) for a, b in zip(ref_steps, steps, strict=True))
    assert torch.equal(ref, out)
    calls = 12 if batched else 24
    assert f"computed {calls} of {calls} calls" in _summary(caplog)


def test_skipped_call_is_input_plus_cached_residual_exactly(patcher, conds, caplog):
    p = teacache(patcher, 10.0, max_skips=2)
    spy = _with_spy(p)
    with caplog.at_level(logging.INFO, logger="comfyui-quadtree-tile"):
        sample(p, conds, steps=9)
    assert "computed 3 of 9 calls (skipped 6 of 9 steps)" in _summary(caplog)
    model = patcher.model.diffusion_model
    skipped = 0
    for i, call in enumerate(spy.calls):
        x, t, context = call["args"][:3]
        uuids = call["args"][-1]["uuids"]
        with torch.no_grad():
            tokens, shape = model.process_img(x)
            h0 = model.img_in(tokens)
            temb = model.time_text_embed(t, h0)
            if not call["skip"]:  # computed: the residual stored afterwards is the block stack's out - in
                h = h0
                txt = model.txt_in(model.txt_norm(context))
                for block in model.transformer_blocks:
                    txt, h = block(h, txt, None, temb)
                stored = spy.calls[i + 1]["residuals"]
                assert torch.equal(torch.cat([stored[u] for u in uuids]), h.float() - h0.float())
                continue
            res = torch.cat([call["residuals"][u] for u in uuids])
            expected = model.head((h0.float() + res).to(h0.dtype), temb, tokens.shape[1], shape, x)
        assert torch.equal(call["out"], expected)
        skipped += 1
    assert skipped == 6 and [c["skip"] for c in spy.calls[:3]] == [False, True, True]


def test_batched_and_separate_cfg_agree(patcher, conds, caplog):
    outs, summaries = [], []
    for batched in (True, False):
        with caplog.at_level(logging.INFO, logger="comfyui-quadtree-tile"):
            outs.append(sample(teacache(patcher, 0.5), conds, batched=batched)[0])
        summaries.append(_summary(caplog).split("(skipped")[1])
        caplog.clear()
    ref = [sample(patcher, conds, batched=b)[0] for b in (True, False)]
    assert summaries[0] == summaries[1] and "skipped 0 " not in summaries[0]
    # as close as the model itself is between batched and separate calls
    assert (outs[0] - outs[1]).abs().max() <= max(10 * (ref[0] - ref[1]).abs().max(), 1e-5)
    assert (outs[0] - ref[0]).abs().max() > 1e-3  # and skipping did change the result


def test_cfg1_runs_one_condition_and_skips(patcher, conds, caplog):
    ref, _ = sample(patcher, conds, cfg=1.0)
    assert torch.equal(sample(teacache(patcher, 0.0), conds, cfg=1.0)[0], ref)
    p = teacache(patcher, 0.5)
    spy = _with_spy(p)
    with caplog.at_level(logging.INFO, logger="comfyui-quadtree-tile"):
        sample(p, conds, cfg=1.0)
    assert all(len(c["args"][-1]["uuids"]) == 1 for c in spy.calls)
    assert "skipped 0 " not in _summary(caplog)


def test_batch_two_and_several_conds(patcher, caplog):
    conds = make_conds(n_pos=2, batch=2)
    ref, _ = sample(patcher, conds, batch=2)
    assert torch.equal(sample(teacache(patcher, 0.0), conds, batch=2)[0], ref)
    outs = []
    for batched in (True, False):
        p = teacache(patcher, 0.5)
        spy = _with_spy(p)
        with caplog.at_level(logging.INFO, logger="comfyui-quadtree-tile"):
            outs.append(sample(p, conds, batch=2, batched=batched)[0])
        assert "skipped 0 " not in _summary(caplog)
        run = spy.runs[0]
        assert run.residuals == {} and run.prev_signal is None  # freed at the end of the run
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    # one residual per condition: three conditions of batch 2 each in the batched run
    assert len(spy.calls[0]["args"][-1]["uuids"]) == 1 and len(spy.calls[-1]["residuals"]) == 3


def test_clones_do_not_share_state_and_reapplying_replaces(patcher, conds):
    fast = teacache(patcher, 0.5)
    first, _ = sample(fast, conds)
    exact = teacache(fast, 0.0)  # re-applied on the TeaCache clone: replaces, does not stack
    ref, _ = sample(patcher, conds)
    assert torch.equal(sample(exact, conds)[0], ref)
    assert torch.equal(sample(fast, conds)[0], first)  # a second run starts fresh
    assert fast.model_options["transformer_options"][TEACACHE_KEY].threshold == 0.5
    assert RUN_KEY not in fast.model_options["transformer_options"]
    assert "patches_replace" not in patcher.model_options["transformer_options"]
    assert not patcher.wrappers


def test_exception_mid_run_leaves_nothing_behind(patcher, conds):
    model = patcher.model.diffusion_model
    before = (set(vars(model)), {k: v.clone() for k, v in model.state_dict().items()})
    p = teacache(patcher, 0.5)
    spy = _with_spy(p)

    def boom(i, denoised, x):
        if i == 5:
            raise KeyboardInterrupt("interrupted")  # like ComfyUI's InterruptProcessingException

    with pytest.raises(KeyboardInterrupt):
        sample(p, conds, callback=boom)
    run = spy.runs[0]
    assert run.residuals == {} and run.prev_signal is None and run.call is None
    assert set(vars(model)) == before[0]
    assert all(torch.equal(v, before[1][k]) for k, v in model.state_dict().items())
    ref, _ = sample(teacache(patcher, 0.5), conds)
    assert torch.equal(sample(p, conds)[0], ref)  # the next run is fresh
    held = weakref.ref(spy.calls[-1]["residuals"][next(iter(spy.calls[-1]["residuals"]))])
    spy.calls.clear()
    gc.collect()
    assert held() is None


def test_few_steps_left_untouched_with_log(patcher, conds, caplog):
    ref, _ = sample(patcher, conds, steps=4)
    with caplog.at_level(logging.INFO, logger="comfyui-quadtree-tile"):
        out, _ = sample(teacache(patcher, 5.0, min_steps=10), conds, steps=4)
    assert torch.equal(out, ref)
    assert any("caching off for this run: the run has 4 steps" in r.getMessage() for r in caplog.records)
    assert "computed 4 of 4 calls" in _summary(caplog)


def test_window_and_max_consecutive_skips(patcher, conds):
    p = teacache(patcher, 100.0, start=0.3, end=0.7, max_skips=2)
    spy = _with_spy(p)
    sample(p, conds, steps=20)
    run = spy.runs[0]
    assert run.skipped_steps > 0
    for c in spy.calls:
        if c["skip"]:
            assert 0.3 <= run.fraction(float(c["args"][-1]["sigmas"][0])) <= 0.7
    runs_of_skips = "".join("s" if c["skip"] else "c" for c in spy.calls).split("c")
    assert max(len(r) for r in runs_of_skips) == 2


def test_cache_on_cpu_gives_the_same_result(patcher, conds):
    a, _ = sample(teacache(patcher, 0.5, cache_device="device"), conds)
    b, _ = sample(teacache(patcher, 0.5, cache_device="cpu"), conds)
    assert torch.equal(a, b)
