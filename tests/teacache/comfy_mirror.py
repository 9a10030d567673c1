"""Mirrors of the ComfyUI sampling plumbing a TeaCache patch goes through (our own code).

Each class reproduces the real one attribute for attribute and call for call where TeaCache can
see it, ComfyUI 0.3.64 (commit a125cd84):

- :class:`WrapperExecutor` mirrors ``comfy.patcher_extension.WrapperExecutor`` (``class_obj``,
  ``__call__`` continues the chain, ``execute`` starts it) and :func:`get_all_wrappers` the
  module function of the same name (``transformer_options["wrappers"][type][key] -> list``).
- :class:`ModelPatcher` mirrors ``comfy.model_patcher.ModelPatcher``: ``model_options`` deep-copied
  by ``clone``, ``wrappers`` copied dict-of-lists with the same callables, ``add_wrapper_with_key``,
  ``remove_wrappers_with_key``, ``set_model_patch_replace`` (copying the nested dicts like
  ``set_model_options_patch_replace``), ``get_model_object``, ``model_dtype``.
- :class:`CFGGuider` mirrors ``comfy.samplers.CFGGuider``: ``sample`` clones ``model_options``,
  merges the patcher's wrappers into ``transformer_options`` (``sampler_helpers.prepare_model_patcher``),
  runs the ``OUTER_SAMPLE`` chain around ``outer_sample``; ``inner_sample`` adds ``sample_sigmas``
  to a clone; ``sampling_function`` drops uncond at cfg 1; ``calc_cond_batch`` mirrors
  ``_calc_cond_batch``: batched conds laid out ``[uncond, cond]`` (``cond_or_uncond == [1, 0]``),
  or one call per cond, uncond first; per call a fresh ``transformer_options`` with ``cond_or_uncond``,
  ``uuids`` and ``sigmas``, and the model called as ``apply_model(x, t, c_crossattn=..., control=...,
  transformer_options=...)``.
- :class:`FlowModel` mirrors ``comfy.model_base.QwenImage`` (``BaseModel._apply_model``) with
  ``ModelSamplingFlux`` (``timestep(sigma) = sigma``, ``denoised = x - out * sigma``).
The sampler is Euler (``comfy.k_diffusion.sampling.sample_euler``) with a per-step callback.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

import torch


def copy_nested_dicts(d: dict) -> dict:
    """Mirror of ``comfy.patcher_extension.copy_nested_dicts``."""
    out = d.copy()
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = copy_nested_dicts(v)
        elif isinstance(v, list):
            out[k] = v.copy()
    return out


def get_all_wrappers(wrapper_type: str, options: dict, is_model_options: bool = False) -> list[Callable]:
    if is_model_options:
        options = options.get("transformer_options", {})
    out: list[Callable] = []
    for w in options.get("wrappers", {}).get(wrapper_type, {}).values():
        out.extend(w)
    return out


class WrapperExecutor:
    def __init__(self, original: Callable, class_obj: Any, wrappers: list[Callable], idx: int = 0) -> None:
        self.original = original
        self.class_obj = class_obj
        self.wrappers = wrappers.copy()
        self.idx = idx
        self.is_last = idx == len(wrappers)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return WrapperExecutor(self.original, self.class_obj, self.wrappers, self.idx + 1).execute(*args, **kwargs)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        args, kwargs = list(args), dict(kwargs)
        if self.is_last:
            return self.original(*args, **kwargs)
        return self.wrappers[self.idx](self, *args, **kwargs)


class ModelSamplingFlux:
    def __init__(self, shift: float = 1.15) -> None:
        self.shift = shift

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma

    def calculate_denoised(self, sigma: torch.Tensor, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x - out * sigma.reshape(sigma.shape[:1] + (1,) * (x.ndim - 1))


class FlowModel(torch.nn.Module):
    """``BaseModel`` around the diffusion model (``model.diffusion_model``, ``model.model_sampling``)."""

    def __init__(self, diffusion_model: torch.nn.Module) -> None:
        super().__init__()
        self.diffusion_model = diffusion_model
        self.model_sampling = ModelSamplingFlux()

    def get_dtype(self) -> torch.dtype:
        return next(self.diffusion_model.parameters()).dtype

    def apply_model(self, x, t, c_crossattn=None, control=None, transformer_options=None, **extra) -> torch.Tensor:
        xc = x
        tt = self.model_sampling.timestep(t)
        out = self.diffusion_model(
            xc, tt, context=c_crossattn, control=control, transformer_options=transformer_options or {}, **extra
        ).float()
        return self.model_sampling.calculate_denoised(t, out, x)


class ModelPatcher:
    def __init__(self, model: FlowModel) -> None:
        self.model = model
        self.model_options: dict = {"transformer_options": {}}
        self.wrappers: dict = {}
        self.patches: dict = {}

    def clone(self) -> ModelPatcher:
        n = ModelPatcher(self.model)
        n.model_options = copy.deepcopy(self.model_options)
        n.patches = {k: v[:] for k, v in self.patches.items()}
        for k, w in self.wrappers.items():
            n.wrappers[k] = {k1: w1.copy() for k1, w1 in w.items()}
        return n

    def get_model_object(self, name: str) -> Any:
        obj = self.model
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    def model_dtype(self) -> torch.dtype:
        return self.model.get_dtype()

    def add_wrapper_with_key(self, wrapper_type: str, key: str, wrapper: Callable) -> None:
        self.wrappers.setdefault(wrapper_type, {}).setdefault(key, []).append(wrapper)

    def remove_wrappers_with_key(self, wrapper_type: str, key: str) -> None:
        self.wrappers.get(wrapper_type, {}).pop(key, None)

    def set_model_patch_replace(self, patch, name, block_name, number, transformer_index=None) -> None:
        to = self.model_options["transformer_options"].copy()
        to["patches_replace"] = to.get("patches_replace", {}).copy()
        to["patches_replace"][name] = to["patches_replace"].get(name, {}).copy()
        key = (block_name, number) if transformer_index is None else (block_name, number, transformer_index)
        to["patches_replace"][name][key] = patch
        self.model_options["transformer_options"] = to


class Cond:
    """One conditioning entry after ``sampler_helpers.convert_cond``: a tensor, a uuid, extras."""

    def __init__(self, context: torch.Tensor, control: Any = None, **extra: Any) -> None:
        self.context = context
        self.uuid = uuid.uuid4()
        self.control = control
        self.extra = extra


class CFGGuider:
    def __init__(self, model_patcher: ModelPatcher, cfg: float = 4.0, batched: bool = True) -> None:
        self.model_patcher = model_patcher
        self.model_options = model_patcher.model_options
        self.cfg = cfg
        self.batched = batched
        self.conds: dict[str, list[Cond]] = {}

    def set_conds(self, positive: list[Cond], negative: list[Cond]) -> None:
        self.conds = {"positive": positive, "negative": negative}

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None) -> torch.Tensor:  # fmt: skip
        orig = self.model_options
        try:
            self.model_options = copy_nested_dicts(self.model_options)
            to = self.model_options.setdefault("transformer_options", {})
            wrappers = to.setdefault("wrappers", {})
            for k, w in self.model_patcher.wrappers.items():
                for k1, w1 in w.items():
                    wrappers.setdefault(k, {}).setdefault(k1, []).extend(w1)
            executor = WrapperExecutor(
                self.outer_sample, self, get_all_wrappers("outer_sample", self.model_options, is_model_options=True)
            )
            return executor.execute(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
        finally:
            self.model_options = orig

    def outer_sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None,
                     disable_pbar=False, seed=None) -> torch.Tensor:  # fmt: skip
        extra = copy_nested_dicts(self.model_options)
        extra.setdefault("transformer_options", {})["sample_sigmas"] = sigmas
        return sampler(self, sigmas, extra, callback, noise, latent_image)

    def predict_noise(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict) -> torch.Tensor:
        cond, uncond = self.conds["positive"], self.conds["negative"]
        if self.cfg == 1.0:
            uncond = None
        outs = self.calc_cond_batch([cond, uncond], x, sigma, model_options)
        if uncond is None:
            return outs[0]
        return outs[1] + (outs[0] - outs[1]) * self.cfg

    def calc_cond_batch(self, conds, x_in, timestep, model_options) -> list[torch.Tensor | None]:
        model = self.model_patcher.model
        out = [torch.zeros_like(x_in) if c is not None else None for c in conds]
        cnt = [0 for _ in conds]
        to_run = [(c, i) for i, cl in enumerate(conds) if cl is not None for c in cl]
        groups = [list(reversed(to_run))] if self.batched else [[r] for r in reversed(to_run)]
        for group in groups:
            n = len(group)
            input_x = torch.cat([x_in] * n)
            context = torch.cat([c.context for c, _ in group])
            transformer_options = copy_nested_dicts(model_options["transformer_options"])
            transformer_options["cond_or_uncond"] = [i for _, i in group]
            transformer_options["uuids"] = [c.uuid for c, _ in group]
            transformer_options["sigmas"] = timestep
            kwargs: dict[str, Any] = {}
            control = group[-1][0].control
            if control is not None:
                kwargs["control"] = control
            ref = group[0][0].extra.get("ref_latents")
            if ref is not None:
                kwargs["ref_latents"] = [torch.cat([r] * n) for r in ref]
            output = model.apply_model(
                input_x, torch.cat([timestep] * n), c_crossattn=context, transformer_options=transformer_options,
                **kwargs,
            ).chunk(n)  # fmt: skip
            for o, (_, i) in zip(output, group, strict=True):
                out[i] += o
                cnt[i] += 1
        return [o / c if o is not None else None for o, c in zip(out, cnt, strict=True)]


def euler(guider: CFGGuider, sigmas, extra_options, callback, noise, latent_image) -> torch.Tensor:
    """``sample_euler`` for a flow model: x = noise scaled to sigma_max, one model evaluation per step."""
    x = noise * sigmas[0] + latent_image * (1 - sigmas[0])
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = guider.predict_noise(x, sigmas[i] * s_in, extra_options)
        if callback is not None:
            callback(i, denoised, x)
        d = (x - denoised) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


def flow_sigmas(steps: int, shift: float = 3.0) -> torch.Tensor:
    """A shifted flow schedule from 1 to 0 (like ``simple`` with a Qwen-Image shift)."""
    t = torch.linspace(1, 0, steps + 1)
    return shift * t / (1 + (shift - 1) * t)
