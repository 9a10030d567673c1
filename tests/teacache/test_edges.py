"""What TeaCache does around other patches: ControlNet, earlier block replacements, Skip Layer Guidance, Edit."""

from __future__ import annotations

import logging

import pytest
import torch
from comfy_mirror import CFGGuider, Cond, copy_nested_dicts
from harness import make_conds, make_patcher, sample, teacache
from test_exact import _summary, _with_spy


@pytest.fixture(scope="module")
def patcher():
    return make_patcher()


def test_controlnet_inputs_switch_caching_off_with_a_warning(patcher, caplog):
    pos, neg = make_conds()
    control = {"input": [0.05 * torch.randn(1, 16, 32), None, 0.05 * torch.randn(1, 16, 32)]}
    pos = [Cond(pos[0].context, control=control)]
    neg = [Cond(neg[0].context, control=control)]
    ref, _ = sample(patcher, (pos, neg))
    with caplog.at_level(logging.INFO, logger="comfyui-quadtree-tile"):
        out, _ = sample(teacache(patcher, 100.0), (pos, neg))
    assert torch.equal(out, ref)
    assert any(r.levelno == logging.WARNING and "ControlNet inputs" in r.getMessage() for r in caplog.records)
    assert "computed 12 of 12 calls" in _summary(caplog)


def test_an_earlier_block_replacement_is_chained(patcher):
    conds = make_conds()
    calls = []

    def shifted(args, extra):
        calls.append(1)
        out = extra["original_block"](args)
        return {"img": out["img"] + 0.01, "txt": out["txt"]}

    other = patcher.clone()
    other.set_model_patch_replace(shifted, "dit", "double_block", 1)
    ref, _ = sample(other, conds)
    n_ref = len(calls)
    calls.clear()
    assert torch.equal(sample(teacache(other, 0.0), conds)[0], ref) and len(calls) == n_ref
    calls.clear()
    p = teacache(other, 100.0, max_skips=2)
    spy = _with_spy(p)
    sample(p, conds)
    assert len(calls) == sum(not c["skip"] for c in spy.calls) < n_ref  # runs exactly on computed calls


class _SLGGuider(CFGGuider):
    """Adds Skip Layer Guidance's extra cond call with block 1 replaced (comfy_extras/nodes_slg.py pattern)."""

    def predict_noise(self, x, sigma, model_options):
        out = super().predict_noise(x, sigma, model_options)
        opts = copy_nested_dicts(model_options)
        dit = opts["transformer_options"].setdefault("patches_replace", {}).setdefault("dit", {})
        dit[("double_block", 1)] = lambda args, extra: {"img": args["img"], "txt": args["txt"]}
        slg = self.calc_cond_batch([self.conds["positive"], None], x, sigma, opts)[0]
        return out + 0.5 * (out - slg)


def _slg_sample(p, conds):
    g = _SLGGuider(p)
    g.set_conds(*conds)
    noise = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    from comfy_mirror import euler, flow_sigmas

    with torch.no_grad():
        return g.sample(noise, torch.zeros_like(noise), euler, flow_sigmas(12))


def test_calls_with_foreign_block_replacements_neither_read_nor_write_the_cache(patcher, caplog):
    conds = make_conds()
    ref = _slg_sample(patcher, conds)
    with caplog.at_level(logging.INFO, logger="comfyui-quadtree-tile"):
        assert torch.equal(_slg_sample(teacache(patcher, 0.0), conds), ref)
    assert any("Skip Layer Guidance" in r.getMessage() for r in caplog.records)
    p = teacache(patcher, 0.5)
    spy = _with_spy(p)
    _slg_sample(p, conds)
    ours = type(p.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 0)])
    foreign = [not isinstance(c["args"][-1]["patches_replace"]["dit"][("double_block", 1)], ours) for c in spy.calls]
    assert sum(foreign) == 12 and not any(c["skip"] for c, f in zip(spy.calls, foreign, strict=True) if f)
    assert any(c["skip"] for c in spy.calls)
    # the extra calls leave the residuals as the regular calls stored them
    for i in range(len(spy.calls) - 1):
        if foreign[i]:
            before, after = spy.calls[i]["residuals"], spy.calls[i + 1]["residuals"]
            assert before.keys() == after.keys() and all(torch.equal(before[u], after[u]) for u in before)


def test_edit_reference_tokens_do_not_enter_the_signal(patcher):
    pos, neg = make_conds()
    ref_latent = [torch.randn(1, 16, 1, 8, 8)]
    edit = ([Cond(pos[0].context, ref_latents=ref_latent)], [Cond(neg[0].context, ref_latents=ref_latent)])
    assert torch.equal(sample(teacache(patcher, 0.0), edit)[0], sample(patcher, edit)[0])
    patterns = []
    for conds in ((pos, neg), edit):
        p = teacache(patcher, 0.5)
        spy = _with_spy(p)
        out, _ = sample(p, conds)
        patterns.append([c["skip"] for c in spy.calls])
        assert all(r.shape == (1, 16, 32) for r in spy.calls[-1]["residuals"].values())  # noisy tokens only
    assert patterns[0] == patterns[1] and any(patterns[1])
