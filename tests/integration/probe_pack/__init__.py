"""Test-only ComfyUI nodes for the integration suite (linked into ``custom_nodes`` next to the pack).

Not part of the pack and never shipped in a workflow; the suite substitutes them into API graphs:

* ``QuadtreeTileTest_ImageDiff`` / ``QuadtreeTileTest_LatentDiff``: exact float comparison of two
  IMAGE / LATENT inputs (PNG output is 8-bit and cannot show a 1e-5 difference). The result is a
  JSON text UI output that ``/history`` returns.
* ``QuadtreeTileTest_FewLayerQwenTE``: loads a full-width Qwen2.5-VL text encoder with fewer
  language layers than 28. ComfyUI's Qwen config fixes 28 layers whatever the weights hold, so
  this passes ComfyUI's own ``qwen25_7b_model_config`` option to ``comfy.sd.load_clip`` through the
  pack's ``load_qwen_clip`` (so the pack's file checks run too).
"""

import json
import logging
import sys

import folder_paths
import torch

log = logging.getLogger("comfyui-quadtree-tile.tests")


def _stats(a: torch.Tensor, b: torch.Tensor, label: str) -> dict:
    out = {"label": label, "shape_a": list(a.shape), "shape_b": list(b.shape)}
    if a.shape == b.shape:
        diff = (a.float() - b.float()).abs()
        out.update(
            max_abs=float(diff.max()), mean_abs=float(diff.mean()), range_a=[float(a.min()), float(a.max())],
            finite=bool(torch.isfinite(a).all() and torch.isfinite(b).all()),
        )  # fmt: skip
    log.info("QuadtreeTileTest diff %s", out)
    return out


class ImageDiff:
    """Max and mean absolute difference of two IMAGE inputs, as a JSON text output."""

    CATEGORY = "quadtree_tile_tests"
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's name
        return {"required": {"a": ("IMAGE",), "b": ("IMAGE",), "label": ("STRING", {"default": "diff"})}}

    def run(self, a, b, label):
        return {"ui": {"text": [json.dumps(_stats(a, b, label))]}}


class LatentDiff(ImageDiff):
    """Max and mean absolute difference of two LATENT inputs, as a JSON text output."""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's name
        return {"required": {"a": ("LATENT",), "b": ("LATENT",), "label": ("STRING", {"default": "diff"})}}

    def run(self, a, b, label):
        return {"ui": {"text": [json.dumps(_stats(a["samples"], b["samples"], label))]}}


def _pack_module(node_id: str):
    """The module of the pack that defines ``node_id``, as ComfyUI imported it.

    ComfyUI names a pack's modules after its folder path (``custom_nodes/comfyui-quadtree-tile``
    or any other name a user cloned it under), so the module is found through ComfyUI's node
    registry, never by its name.
    """
    import nodes

    cls = nodes.NODE_CLASS_MAPPINGS.get(node_id)
    if cls is None:
        raise RuntimeError(f"the quadtree-tile pack is not loaded: ComfyUI has no node {node_id!r}")
    return sys.modules[cls.__module__]


class FewLayerQwenTE:
    """Load a full-width, few-layer Qwen2.5-VL text encoder as a Qwen-Image CLIP."""

    CATEGORY = "quadtree_tile_tests"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's name
        return {
            "required": {
                "clip_name": (folder_paths.get_filename_list("text_encoders"),),
                "layers": ("INT", {"default": 1, "min": 1, "max": 28}),
            }
        }

    def load(self, clip_name, layers):
        path = folder_paths.get_full_path_or_raise("text_encoders", clip_name)
        load_qwen_clip = _pack_module("QuadtreeTile_QwenVLLoader").load_qwen_clip
        return (load_qwen_clip(path, {"qwen25_7b_model_config": {"num_hidden_layers": layers}}),)


NODE_CLASS_MAPPINGS = {
    "QuadtreeTileTest_ImageDiff": ImageDiff,
    "QuadtreeTileTest_LatentDiff": LatentDiff,
    "QuadtreeTileTest_FewLayerQwenTE": FewLayerQwenTE,
}
