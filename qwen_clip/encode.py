"""Everything an encode needs before and after the tokenizer, independent of the host.

:func:`prepare_encode` checks the mode against the images, resizes them the preset's way and builds
the chat text. :func:`finish_tokens` takes the ids the host's tokenizer made from that text,
finds the drop point, applies the preset's length limit and says how long the conditioning must
come out, so the host layer can check what the encoder returned instead of trusting it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .resize import PRESETS, PreparedImage, Preset, check_image_size, prepare_image
from .templates import Mode, build_prompt
from .tokens import STOCK_DROP, drop_index, image_slots

log = logging.getLogger("comfyui-quadtree-tile.qwen_clip")


@dataclass(frozen=True)
class PreparedEncode:
    """One encode's checked inputs, ready for the tokenizer: the chat text and the resized images."""

    preset: Preset
    mode: Mode
    text: str
    images: tuple[PreparedImage, ...]
    slots: tuple[str, ...]
    """Input names the images came from, in picture order."""
    custom_system: bool


@dataclass(frozen=True)
class TokenLayout:
    """The ids to encode, where the template part ends and how long the encoder's output must be."""

    ids: tuple[int, ...]
    drop: int
    expected_length: int
    """Conditioning length: ids after the drop, each image slot replaced by its vision tokens."""
    truncated: int
    """Ids cut off by the preset's text-to-image length limit (0: none)."""


def _check_image(name: str, image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] < 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name} is not a ComfyUI IMAGE (batch, height, width, channels); got {shape}.")
    if image.shape[0] != 1:
        raise ValueError(
            f"{name} is a batch of {image.shape[0]} images. Connect one image per input (for several pictures "
            "in edit-plus use image1, image2, ...; an 'Image From Batch' node picks one)."
        )
    check_image_size(int(image.shape[2]), int(image.shape[1]), name)
    if not torch.isfinite(image).all():
        raise ValueError(f"{name} contains NaN or infinite pixel values.")


def prepare_encode(
    preset: str,
    mode: str,
    prompt: str,
    images: Sequence[tuple[str, torch.Tensor]] = (),
    system_prompt: str = "",
    with_vae: bool = False,
) -> PreparedEncode:
    """Check the inputs, resize the images and build the chat text of one encode.

    ``images`` are the connected image inputs as (input name, IMAGE) pairs in slot order;
    edit-plus numbers them Picture 1..n in that order, whichever slots they came from.
    ``with_vae`` also makes the VAE copies. A blank ``system_prompt`` means the stock one. An
    empty prompt is allowed (Qwen-Image's negative prompt is usually empty): it encodes the
    template with nothing in the user turn.
    """
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    mode = Mode(mode)
    names = [n for n, _ in images]
    if mode is Mode.T2I and images:
        raise ValueError(
            f"Text-to-image takes no images, but {', '.join(names)} {'is' if len(names) == 1 else 'are'} connected. "
            "Choose mode edit or edit-plus, or disconnect the image."
        )
    if mode is not Mode.T2I and not images:
        raise ValueError(
            f"Mode {mode.value} needs an image to edit, and none is connected. Connect image1, or choose "
            "text-to-image to encode the prompt alone."
        )
    if mode is Mode.EDIT and len(images) > 1:
        raise ValueError(
            f"Mode edit (Qwen-Image-Edit) takes exactly one image; {len(images)} are connected ({', '.join(names)}). "
            "Choose edit-plus (Qwen-Image-Edit-2509/2511) for several images."
        )
    for name, image in images:
        _check_image(name, image)
    p = PRESETS[preset]
    prepared = tuple(prepare_image(p, mode, image[0], with_vae) for _, image in images)
    custom = system_prompt if system_prompt.strip() else None  # blank means the model's own
    text = build_prompt(mode, prompt, len(prepared), custom)
    return PreparedEncode(p, mode, text, prepared, tuple(names), custom is not None)


def finish_tokens(prepared: PreparedEncode, ids: Sequence[int]) -> TokenLayout:
    """Drop point, length limit and expected conditioning length for the ids of ``prepared.text``."""
    ids = tuple(int(t) for t in ids)
    slots = image_slots(ids)
    if len(slots) != len(prepared.images):
        raise RuntimeError(
            f"The tokenizer made {len(slots)} image slot(s) for {len(prepared.images)} image(s); the tokenizer "
            "attached to this CLIP is not the Qwen2.5 one."
        )
    drop = drop_index(ids)
    if not prepared.custom_system and drop != STOCK_DROP[prepared.mode.value]:
        raise RuntimeError(
            f"The stock {prepared.mode.value} template tokenized to a drop point of {drop}, not "
            f"{STOCK_DROP[prepared.mode.value]}; the tokenizer attached to this CLIP is not the Qwen2.5 one."
        )
    truncated = 0
    limit = prepared.preset.t2i_max_tokens
    if prepared.mode is Mode.T2I and limit is not None and len(ids) - drop > limit:
        truncated = len(ids) - drop - limit
        ids = ids[: drop + limit]
        log.warning(
            "Prompt is %d tokens; preset %s keeps the first %d (the model was trained on up to 512); "
            "%d tokens were cut. Choose preset comfy to keep them all.",
            limit + truncated,
            prepared.preset.name,
            limit,
            truncated,
        )
    vision = sum(im.sizes.vision_tokens - 1 for im in prepared.images)
    return TokenLayout(ids, drop, len(ids) - drop + vision, truncated)


def encode_info(prepared: PreparedEncode, tokens: TokenLayout) -> str:
    """A few lines for the user: token counts, the drop point and each image's sizes (the VAE copy's
    only when one was made for a connected VAE)."""
    lines = [
        f"preset {prepared.preset.name}, mode {prepared.mode.value}"
        + (", custom system prompt" if prepared.custom_system else "")
        + f": {len(tokens.ids)} ids, drop {tokens.drop}, conditioning {tokens.expected_length} tokens"
        + (f", {tokens.truncated} prompt tokens cut by the preset's limit" if tokens.truncated else "")
    ]
    for k, (name, im) in enumerate(zip(prepared.slots, prepared.images, strict=True), start=1):
        p = im.sizes
        label = f"Picture {k} ({name})" if prepared.mode is Mode.EDIT_PLUS else name
        lines.append(
            f"{label}: {p.source[0]}x{p.source[1]} -> vision {p.vision[0]}x{p.vision[1]} -> "
            f"{p.vision_grid[0]}x{p.vision_grid[1]} ({p.vision_tokens} tokens)"
            + (f"; VAE copy {p.vae[0]}x{p.vae[1]}" if im.vae is not None else "")  # only with a VAE connected
        )
    return "\n".join(lines)
