"""The ComfyUI-shaped hooks: two wrappers and one block replacement per transformer block.

Nothing here imports ComfyUI. The functions follow ComfyUI's calling conventions
(``comfy.patcher_extension`` wrappers ``w(executor, *args, **kwargs)`` and
``patches_replace["dit"][("double_block", i)]`` entries ``patch(args, extra)``) and
:func:`apply_teacache` installs them on a clone through the ``ModelPatcher`` methods
``clone``, ``get_model_object``, ``add_wrapper_with_key``, ``remove_wrappers_with_key`` and
``set_model_patch_replace``. The model itself is never modified: the patches live in the clone's
``model_options``; the per-run state lives in the run's own copy of them and is dropped in
``finally``.
"""

from __future__ import annotations

from typing import Any

import torch

from .config import TeaCacheConfig
from .run import CallContext, TeaCacheRun

TEACACHE_KEY = "quadtree_tile_teacache"
"""This pack's key in a patched model's options: its wrappers' key and the ``transformer_options``
entry that holds the node's :class:`TeaCacheConfig`."""
RUN_KEY = "quadtree_tile_teacache_run"
"""The ``transformer_options`` entry that holds the :class:`TeaCacheRun` of the run in progress."""
OUTER_SAMPLE = "outer_sample"  # comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
DIFFUSION_MODEL = "diffusion_model"  # comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL

SUPPORTED = "Qwen-Image / Qwen-Image-Edit diffusion models (ComfyUI's QwenImageTransformer2DModel)"


def check_qwen_image(diffusion_model: Any) -> int:
    """Return the number of transformer blocks, or raise a ``ValueError`` naming what is supported."""
    blocks = getattr(diffusion_model, "transformer_blocks", None)
    ok = (
        blocks is not None
        and len(blocks) > 0
        and all(hasattr(diffusion_model, a) for a in ("img_in", "time_text_embed", "norm_out", "proj_out"))
        and all(hasattr(blocks[0], a) for a in ("img_mod", "img_norm1", "txt_mod"))
    )
    if not ok:
        raise ValueError(
            f"TeaCache (Qwen-Image) supports {SUPPORTED}; this MODEL's diffusion model is "
            f"{type(diffusion_model).__name__}. Connect a Qwen-Image model (for other models use ComfyUI's EasyCache)."
        )
    return len(blocks)


class BlockPatch:
    """``patches_replace["dit"][("double_block", index)]`` entry of this pack.

    Block 0 computes the signal and takes the decision; on a skip, block 0 returns its input plus
    the cached residual and the later blocks return their input unchanged; on a compute, every
    block runs (through ``previous``, a replacement another node installed first, when there is
    one) and the last block stores the residual. Calls without an active run or call context run
    untouched. Holds no tensors and no module, so ``ModelPatcher.clone``'s deep copy is cheap.
    """

    def __init__(self, index: int, last: bool, previous: Any = None) -> None:
        self.index = index
        self.last = last
        self.previous = previous

    def __call__(self, args: dict, extra: dict) -> dict:
        run = args["transformer_options"].get(RUN_KEY)
        call: CallContext | None = run.call if isinstance(run, TeaCacheRun) else None
        if call is not None and self.index == 0:
            run.on_first_block(call, args["img"], args["vec"])
        if call is not None and call.decided and call.skip:
            img = run.skipped_img(call, args["img"]) if self.index == 0 else args["img"]
            return {"img": img, "txt": args["txt"]}
        out = self.previous(args, extra) if self.previous is not None else extra["original_block"](args)
        if call is not None and self.last:
            run.on_last_block(call, out["img"])
        return out


def _transformer_options(args: tuple, kwargs: dict) -> dict | None:
    if "transformer_options" in kwargs:
        return kwargs["transformer_options"]
    for a in reversed(args):
        if isinstance(a, dict):
            return a
    return None


def diffusion_model_wrapper(executor: Any, *args: Any, **kwargs: Any) -> Any:
    """``DIFFUSION_MODEL`` wrapper: open a call context for the block patches, close it afterwards."""
    t_o = _transformer_options(args, kwargs)
    run = t_o.get(RUN_KEY) if t_o is not None else None
    if not isinstance(run, TeaCacheRun):
        return executor(*args, **kwargs)
    model = executor.class_obj
    blocks = t_o.get("patches_replace", {}).get("dit", {})
    ours = all(isinstance(blocks.get(("double_block", i)), BlockPatch) for i in range(len(model.transformer_blocks)))
    call = run.begin_call(model, args[0], t_o, kwargs, ours)
    out = None
    try:
        out = executor(*args, **kwargs)
        return out
    finally:
        run.end_call(call, out)


def sampling_details(guider: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    """What a calibration record says about the sampling run: steps, sampler, cfg, shift, size, dtype."""
    names = ("noise", "latent_image", "sampler", "sigmas")
    a = dict(zip(names, args, strict=False)) | {k: v for k, v in kwargs.items() if k in names}
    out: dict[str, Any] = {}
    sigmas = a.get("sigmas")
    if isinstance(sigmas, torch.Tensor):
        out["steps"] = int(sigmas.numel() - 1)
        out["sigmas"] = [round(float(s), 6) for s in sigmas.tolist()]
    sampler = a.get("sampler")
    fn = getattr(sampler, "sampler_function", None)
    out["sampler"] = getattr(fn, "__name__", type(sampler).__name__)
    noise = a.get("noise")
    if isinstance(noise, torch.Tensor):
        out["latent_shape"] = list(noise.shape)
        out["resolution"] = [int(noise.shape[-2]) * 8, int(noise.shape[-1]) * 8]
    if hasattr(guider, "cfg"):
        out["cfg"] = float(guider.cfg)
    patcher = getattr(guider, "model_patcher", None)
    if patcher is not None:
        sampling = patcher.get_model_object("model_sampling") if hasattr(patcher, "get_model_object") else None
        if hasattr(sampling, "shift"):
            out["shift"] = float(sampling.shift)
        if hasattr(patcher, "model_dtype"):
            out["dtype"] = str(patcher.model_dtype())
        out["weight_patches"] = len(getattr(patcher, "patches", {}) or {})
    return out


def _copy_options(d: dict) -> dict:
    # the same nesting ComfyUI's create_model_options_clone copies: dicts recursively, lists shallowly
    return {
        k: _copy_options(v) if isinstance(v, dict) else (v.copy() if isinstance(v, list) else v) for k, v in d.items()
    }


def outer_sample_wrapper(executor: Any, *args: Any, **kwargs: Any) -> Any:
    """``OUTER_SAMPLE`` wrapper: a fresh :class:`TeaCacheRun` for this run, closed and dropped in ``finally``.

    The guider's options are swapped for a copy holding the run and restored afterwards, so
    nothing of the run survives it (exceptions and interrupts included) and two clones of the
    patched model never share state.
    """
    guider = executor.class_obj
    saved = guider.model_options
    guider.model_options = _copy_options(saved)
    run = None
    try:
        t_o = guider.model_options.setdefault("transformer_options", {})
        config = t_o.get(TEACACHE_KEY)
        if isinstance(config, TeaCacheConfig):
            sigmas = args[3] if len(args) > 3 else kwargs["sigmas"]
            sampling = sampling_details(guider, args, kwargs) if config.mode == "calibrate" else None
            run = TeaCacheRun(config, sigmas.reshape(-1).tolist(), sampling)
            t_o[RUN_KEY] = run
        return executor(*args, **kwargs)
    finally:
        guider.model_options = saved
        if run is not None:
            run.close()


def apply_teacache(patcher: Any, config: TeaCacheConfig) -> Any:
    """Return a clone of ``patcher`` (a ComfyUI ``ModelPatcher``) with TeaCache installed.

    Applying it again replaces this pack's patches instead of stacking them; block replacements
    another node installed earlier are kept and chained. Raises ``ValueError`` for a model that
    is not Qwen-Image.
    """
    n_blocks = check_qwen_image(patcher.get_model_object("diffusion_model"))
    m = patcher.clone()
    existing = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    for i in range(n_blocks):
        previous = existing.get(("double_block", i))
        if isinstance(previous, BlockPatch):
            previous = previous.previous
        m.set_model_patch_replace(BlockPatch(i, i == n_blocks - 1, previous), "dit", "double_block", i)
    for kind, fn in ((OUTER_SAMPLE, outer_sample_wrapper), (DIFFUSION_MODEL, diffusion_model_wrapper)):
        m.remove_wrappers_with_key(kind, TEACACHE_KEY)
        m.add_wrapper_with_key(kind, TEACACHE_KEY, fn)
    m.model_options.setdefault("transformer_options", {})[TEACACHE_KEY] = config
    return m
