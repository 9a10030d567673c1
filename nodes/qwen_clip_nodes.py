"""Qwen2.5-VL Loader (Qwen-Image) and Qwen-Image Text Encode.

The loader checks the file's header (family, completeness, vision tower) and then loads it
through ComfyUI's own CLIP machinery (``comfy.sd.load_clip`` with ``CLIPType.QWEN_IMAGE``), so
fp8-scaled files, LoRAs, hooks and memory management behave as with CLIPLoader.

The encode node builds the DiffSynth-Studio / diffusers chat text, tokenizes it with the
tokenizer ComfyUI attached to the CLIP (the bundled Qwen2.5 BPE) exactly as those libraries do,
puts the resized images into the image slots and lets ComfyUI's encoder run and drop the
template. It then checks the conditioning length against what the token stream implies, so a
missing drop, a double drop or a lost image cannot pass silently.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any

import torch

from ..qwen_clip import PRESETS, TextEncoderInfo, encode_info, finish_tokens, inspect_qwen_checkpoint, prepare_encode
from ..qwen_clip.checkpoint import QWEN_LAYERS, SINGLE_FILE_HINT
from ..qwen_clip.templates import Mode
from ..qwen_clip.tokens import IMAGE_PAD

log = logging.getLogger("comfyui-quadtree-tile.nodes")

CATEGORY = "quadtree_tile/qwen"
FOLDER = "text_encoders"
NO_FILES = "(no .safetensors file in models/text_encoders)"
IMAGE_INPUTS = ("image1", "image2", "image3", "image4")

_LOADED: weakref.WeakKeyDictionary[Any, TextEncoderInfo] = weakref.WeakKeyDictionary()
"""What the loader found in each file, keyed by the CLIP's encoder module (shared by its clones)."""


def _text_encoder_files() -> list[str]:
    import folder_paths

    files = [f for f in folder_paths.get_filename_list(FOLDER) if f.lower().endswith(".safetensors")]
    return files or [NO_FILES]


def _resolve(clip_name: str) -> str:
    import folder_paths

    folders = ", ".join(folder_paths.get_folder_paths(FOLDER))
    if clip_name == NO_FILES:
        raise FileNotFoundError(f"No .safetensors text encoder found in {folders}. {SINGLE_FILE_HINT}")
    if not clip_name.lower().endswith(".safetensors"):
        raise ValueError(f"{clip_name}: only .safetensors text encoders are accepted (no pickle formats).")
    path = folder_paths.get_full_path(FOLDER, clip_name)
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(f"Text encoder {clip_name!r} is not in {folders}. {SINGLE_FILE_HINT}")
    return path


def text_tokenizer(clip: Any) -> Any:
    """The Qwen2.5 tokenizer ComfyUI attached to ``clip``; a clear error for any other text encoder."""
    inner = getattr(getattr(clip, "tokenizer", None), "qwen25_7b", None)
    tokenizer = getattr(inner, "tokenizer", None)
    if tokenizer is None or not callable(tokenizer):
        kind = type(getattr(clip, "tokenizer", None)).__name__
        raise ValueError(
            f"This CLIP is not a Qwen2.5-VL text encoder (its tokenizer is {kind}). "
            "Load qwen_2.5_vl_7b*.safetensors with 'Qwen2.5-VL Loader (Qwen-Image)' (or CLIPLoader, type qwen_image)."
        )
    return tokenizer


def load_qwen_clip(path: str, model_options: dict[str, Any] | None = None) -> Any:
    """Check ``path`` and load it as a Qwen-Image CLIP through ``comfy.sd.load_clip``.

    ``model_options`` go to ComfyUI unchanged; a ``qwen25_7b_model_config`` in them (ComfyUI's
    own config override) sets the language-model depth the check expects.
    """
    import comfy.sd
    import folder_paths

    model_options = dict(model_options or {})
    layers = model_options.get("qwen25_7b_model_config", {}).get("num_hidden_layers", QWEN_LAYERS)
    info = inspect_qwen_checkpoint(path, layers=layers)
    clip = comfy.sd.load_clip(
        ckpt_paths=[path],
        embedding_directory=folder_paths.get_folder_paths("embeddings"),
        clip_type=comfy.sd.CLIPType.QWEN_IMAGE,
        model_options=model_options,
    )
    text_tokenizer(clip)
    _LOADED[clip.cond_stage_model] = info
    if not info.has_vision:
        log.warning(
            "%s has no vision tower (no visual.* weights): text-to-image works, edit and edit-plus encodes "
            "will be refused.",
            os.path.basename(path),
        )
    return clip


def require_vision(clip: Any) -> None:
    """Refuse an image encode when the loader saw no ``visual.*`` weights in the CLIP's file."""
    try:
        info = _LOADED.get(clip.cond_stage_model)
    except (AttributeError, TypeError):  # no encoder module, or one that cannot be weakly referenced
        info = None
    if info is None:
        log.debug("CLIP not loaded by the Qwen2.5-VL Loader: its vision weights cannot be checked.")
        return
    if not info.has_vision:
        raise ValueError(
            f"{os.path.basename(info.path)} has no vision tower (no visual.* tensors), so edit and edit-plus "
            "cannot see the image. Use a file that includes it: qwen_2.5_vl_7b.safetensors or "
            "qwen_2.5_vl_7b_fp8_scaled.safetensors (Comfy-Org's Qwen-Image repackage); a GGUF text encoder "
            "needs its mmproj file. Text-to-image works with this file."
        )


class QwenVLLoader:
    """Load a single-file Qwen2.5-VL-7B text encoder for Qwen-Image, checked before it is built."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {
            "required": {
                "clip_name": (
                    _text_encoder_files(),
                    {
                        "tooltip": "A Qwen2.5-VL-7B text encoder in models/text_encoders (.safetensors only), e.g. "
                        "qwen_2.5_vl_7b_fp8_scaled.safetensors. Edit models need a file with the vision tower."
                    },
                ),
                "device": (
                    ["default", "cpu"],
                    {
                        "default": "default",
                        "tooltip": "default: ComfyUI's text-encoder device. cpu: keep and run the encoder on the CPU "
                        "(frees ~8-16 GB of VRAM, slower encodes).",
                    },
                ),
            }
        }

    RETURN_TYPES = ("CLIP",)
    OUTPUT_TOOLTIPS = ("The Qwen2.5-VL text encoder, for Qwen-Image Text Encode or any Qwen-Image text node.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads a Qwen2.5-VL-7B text encoder through ComfyUI's CLIP loader (type qwen_image) after checking the "
        "file: the wrong model family, a single shard or a truncated file are reported by name, and a file "
        "without the vision tower is marked so that edit encodes fail clearly instead of producing garbage."
    )

    def load(self, clip_name: str, device: str = "default") -> tuple[Any]:
        model_options: dict[str, Any] = {}
        if device == "cpu":
            model_options["load_device"] = model_options["offload_device"] = torch.device("cpu")
        return (load_qwen_clip(_resolve(clip_name), model_options),)


def _check_vae(vae: Any) -> None:
    channels = getattr(vae, "latent_channels", 16)
    if channels != 16:
        raise ValueError(
            f"This VAE makes {channels}-channel latents; Qwen-Image reference latents come from the Qwen-Image "
            "VAE (qwen_image_vae.safetensors, 16 channels)."
        )


class QwenImageTextEncode:
    """Encode a prompt (and edit images) for Qwen-Image exactly as DiffSynth-Studio, diffusers or ComfyUI do."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        image_tip = (
            "Edit image {k} (optional). edit takes one image; edit-plus numbers the connected images "
            "Picture 1, 2, ... in slot order, skipping empty slots."
        )
        return {
            "required": {
                "clip": (
                    "CLIP",
                    {"tooltip": "The Qwen2.5-VL text encoder (Qwen2.5-VL Loader, or CLIPLoader with type qwen_image)."},
                ),
                "prompt": (
                    "STRING",
                    {
                        "multiline": True,
                        "dynamicPrompts": True,
                        "tooltip": "The prompt or edit instruction. Taken literally: no (weights), no \\( escapes, "
                        "no embedding: syntax. Empty is allowed (the usual negative prompt).",
                    },
                ),
                "preset": (
                    list(PRESETS),
                    {
                        "default": "diffusers",
                        "tooltip": "Whose preprocessing to reproduce. diffsynth: 1024² /32 bicubic (edit-plus vision "
                        "copy 384² from it); diffusers: 1024² /32 Lanczos, 384² vision copy, t2i prompt cut at 512 "
                        "tokens; comfy: the images and template of ComfyUI's built-in nodes (no /32 snap, area "
                        "filter), but the prompt is still taken literally: ComfyUI's own tokenizer un-escapes \\( "
                        "and \\) and reads embedding:name, this node does neither.",
                    },
                ),
                "mode": (
                    [m.value for m in Mode],
                    {
                        "default": Mode.T2I.value,
                        "tooltip": "text-to-image: Qwen-Image. edit: Qwen-Image-Edit, one image. edit-plus: "
                        "Qwen-Image-Edit-2509/2511, one or more images labelled Picture 1..n.",
                    },
                ),
            },
            "optional": {
                "vae": (
                    "VAE",
                    {
                        "tooltip": "The Qwen-Image VAE. When given, each edit image is encoded at the preset's "
                        "reference size and attached as reference_latents."
                    },
                ),
                **{name: ("IMAGE", {"tooltip": image_tip.format(k=k)}) for k, name in enumerate(IMAGE_INPUTS, 1)},
                "system_prompt": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": "",
                        "tooltip": "Replaces the template's system instruction (empty: the model's own). The chat "
                        "frame stays; the dropped tokens are counted from the token stream.",
                    },
                ),
            },
        }

    RETURN_TYPES = ("CONDITIONING", "STRING")
    RETURN_NAMES = ("conditioning", "info")
    OUTPUT_TOOLTIPS = (
        "The prompt embedding (template dropped), with reference_latents when a VAE and images are given.",
        "Token counts, the drop point and every image's sizes (input, vision copy, 28-px grid, and the VAE copy "
        "when a VAE is connected).",
    )
    FUNCTION = "encode"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Qwen-Image prompt encoding with DiffSynth-Studio's, diffusers' or ComfyUI's exact templates, token ids "
        "and image resizing, for text-to-image, edit and edit-plus (any number of images). Every failure is an "
        "error; nothing is ever made up."
    )

    def encode(
        self,
        clip: Any,
        prompt: str,
        preset: str,
        mode: str,
        vae: Any = None,
        system_prompt: str = "",
        **images: torch.Tensor | None,
    ) -> tuple[list, str]:
        tokenizer = text_tokenizer(clip)
        given = [(name, images[name]) for name in IMAGE_INPUTS if images.get(name) is not None]
        with_vae = vae is not None and Mode(mode) is not Mode.T2I
        if with_vae:
            _check_vae(vae)
        prepared = prepare_encode(preset, mode, prompt, given, system_prompt, with_vae=with_vae)
        if prepared.images:
            require_vision(clip)
        tokens = finish_tokens(prepared, tokenizer(prepared.text)["input_ids"])
        pictures = iter(prepared.images)
        pairs = [
            ({"type": "image", "data": next(pictures).vision, "original_type": "image"}, 1.0)
            if t == IMAGE_PAD
            else (t, 1.0)
            for t in tokens.ids
        ]
        conditioning = clip.encode_from_tokens_scheduled({clip.tokenizer.clip_name: [pairs]})
        for cond, _ in conditioning:
            if cond.shape[1] != tokens.expected_length:
                raise RuntimeError(
                    f"The encoder returned {cond.shape[1]} tokens where the prompt and images imply "
                    f"{tokens.expected_length} (drop {tokens.drop}). This ComfyUI version handles the Qwen "
                    "template differently; please report it with the info output."
                )
        info = encode_info(prepared, tokens)
        if with_vae:
            import node_helpers

            latents = [vae.encode(im.vae) for im in prepared.images]
            conditioning = node_helpers.conditioning_set_values(
                conditioning, {"reference_latents": latents}, append=True
            )
            info += "\nreference latents: " + ", ".join("x".join(map(str, lat.shape)) for lat in latents)
        log.info("Qwen-Image Text Encode: %s", info.replace("\n", "; "))
        return (conditioning, info)


NODES = (
    ("QuadtreeTile_QwenVLLoader", "Qwen2.5-VL Loader (Qwen-Image)", QwenVLLoader),
    ("QuadtreeTile_QwenImageTextEncode", "Qwen-Image Text Encode", QwenImageTextEncode),
)
