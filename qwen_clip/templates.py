"""The Qwen-Image chat templates and the prompt text built from them.

The three templates and the "Picture N" label are model-interface facts: DiffSynth-Studio,
diffusers and ComfyUI hold them byte for byte identical, so every preset uses the same text.
Only the system prompt may be replaced; the chat frame around it never changes, which keeps the
drop point (the end of ``<|im_start|>user\\n``) computable from the token stream.
"""

from __future__ import annotations

from enum import Enum

T2I_SYSTEM = (
    "Describe the image by detailing the color, shape, size, texture, quantity, text, spatial "
    "relationships of the objects and background:"
)
EDIT_SYSTEM = (
    "Describe the key features of the input image (color, shape, size, texture, objects, background), "
    "then explain how the user's text instruction should alter or modify the image. Generate a new image "
    "that meets the user's requirements while maintaining consistency with the original input where "
    "appropriate."
)

VISION_BLOCK = "<|vision_start|><|image_pad|><|vision_end|>"
PICTURE_LABEL = "Picture {}: " + VISION_BLOCK
"""Edit-plus prefix of image k (1-based, counted over the images actually given)."""

_HEAD = "<|im_start|>system\n"
_USER = "<|im_end|>\n<|im_start|>user\n"
_TAIL = "<|im_end|>\n<|im_start|>assistant\n"

T2I_TEMPLATE = _HEAD + T2I_SYSTEM + _USER + "{}" + _TAIL
EDIT_TEMPLATE = _HEAD + EDIT_SYSTEM + _USER + VISION_BLOCK + "{}" + _TAIL
EDIT_PLUS_TEMPLATE = _HEAD + EDIT_SYSTEM + _USER + "{}" + _TAIL

RESERVED = (
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|endoftext|>",
)
"""Control tokens a system prompt may not contain (they would change the chat frame or the image slots)."""

VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
"""Tokens a user prompt may not contain: each would add or break an image slot."""


class Mode(str, Enum):
    """Which Qwen-Image template a prompt is encoded with."""

    T2I = "text-to-image"
    EDIT = "edit"
    EDIT_PLUS = "edit-plus"

    @property
    def max_images(self) -> int | None:
        """How many images the mode takes at most (None: any number)."""
        return {Mode.T2I: 0, Mode.EDIT: 1, Mode.EDIT_PLUS: None}[self]

    @property
    def stock_system_prompt(self) -> str:
        """The system prompt of the model's own template for this mode."""
        return T2I_SYSTEM if self is Mode.T2I else EDIT_SYSTEM


def _check_system_prompt(system_prompt: str) -> None:
    for token in RESERVED:
        if token in system_prompt:
            raise ValueError(
                f"The custom system prompt contains the control token {token}. The chat frame around it "
                "is fixed (system turn, then the user turn with the images and your prompt); write only "
                "the instruction text, without any <|...|> token."
            )


def _check_user_prompt(prompt: str) -> None:
    for token in VISION_TOKENS:
        if token in prompt:
            raise ValueError(
                f"The prompt contains {token}. Image slots are added by the node, one per connected image; "
                "remove the token from the prompt and connect the images instead."
            )


def build_prompt(mode: Mode, prompt: str, num_images: int, system_prompt: str | None = None) -> str:
    """The full chat text for ``prompt``, exactly as DiffSynth-Studio and diffusers build it.

    ``num_images`` must already fit the mode (0 for text-to-image, 1 for edit, 1 or more for
    edit-plus; the node checks and explains). Edit-plus puts ``Picture k: <vision block>`` for
    k = 1..num_images directly before the prompt. ``system_prompt`` replaces the stock system
    prompt when given (non-empty); everything else stays the stock frame.
    """
    mode = Mode(mode)
    _check_user_prompt(prompt)
    system = mode.stock_system_prompt
    if system_prompt:
        _check_system_prompt(system_prompt)
        system = system_prompt
    if mode is Mode.T2I:
        user = prompt
    elif mode is Mode.EDIT:
        user = VISION_BLOCK + prompt
    else:
        user = "".join(PICTURE_LABEL.format(k) for k in range(1, num_images + 1)) + prompt
    # Concatenation, not str.format: braces in a custom system prompt or the prompt stay literal.
    return _HEAD + system + _USER + user + _TAIL
