"""Test-only ComfyUI node for the TeaCache check: fixed random Qwen-Image conditioning, no text encoder.

Link this folder into a test ComfyUI's ``custom_nodes``; it is not part of the pack. The output
has the shape ComfyUI's Qwen-Image text encoding gives (``[1, tokens, 3584]``), seeded.
"""

import torch


class RandomQwenConditioning:
    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802 - ComfyUI's name
        return {
            "required": {
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "tooltip": "Generator seed."}),
                "tokens": ("INT", {"default": 12, "min": 1, "max": 1024, "tooltip": "Sequence length."}),
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "quadtree_tile_test"

    def make(self, seed, tokens):
        g = torch.Generator().manual_seed(seed)
        return ([[torch.randn(1, tokens, 3584, generator=g), {}]],)


NODE_CLASS_MAPPINGS = {"QuadtreeTileTest_RandomQwenConditioning": RandomQwenConditioning}
