"""Qwen2.5-VL prompt encoding for Qwen-Image, Qwen-Image-Edit and Edit-2509/2511.

Import-free of ComfyUI: the templates, the drop point, the presets' image resizing and the
checkpoint check need only torch, numpy and (for the PIL-filter presets) Pillow. The ComfyUI
layer (``nodes/qwen_clip_nodes.py``) tokenizes with the CLIP's own tokenizer and encodes.
"""

from .checkpoint import TextEncoderInfo, inspect_qwen_checkpoint, read_header
from .encode import PreparedEncode, TokenLayout, encode_info, finish_tokens, prepare_encode
from .resize import PRESETS, ImageSizes, Preset, image_sizes, prepare_image, smart_resize, target_size
from .templates import EDIT_PLUS_TEMPLATE, EDIT_TEMPLATE, PICTURE_LABEL, T2I_TEMPLATE, Mode, build_prompt
from .tokens import STOCK_DROP, drop_index, image_slots

__all__ = [
    "EDIT_PLUS_TEMPLATE",
    "EDIT_TEMPLATE",
    "PICTURE_LABEL",
    "PRESETS",
    "STOCK_DROP",
    "T2I_TEMPLATE",
    "ImageSizes",
    "Mode",
    "PreparedEncode",
    "Preset",
    "TextEncoderInfo",
    "TokenLayout",
    "build_prompt",
    "drop_index",
    "encode_info",
    "finish_tokens",
    "image_sizes",
    "image_slots",
    "inspect_qwen_checkpoint",
    "prepare_encode",
    "prepare_image",
    "read_header",
    "smart_resize",
    "target_size",
]
