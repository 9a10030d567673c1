"""The chat text: byte-exact stock templates, Picture numbering, custom system prompts, bad prompts."""

import pytest
from quadtree_tile.qwen_clip import (
    EDIT_PLUS_TEMPLATE,
    EDIT_TEMPLATE,
    PICTURE_LABEL,
    T2I_TEMPLATE,
    Mode,
    build_prompt,
    prepare_encode,
)

# The three templates as DiffSynth-Studio, diffusers and ComfyUI all spell them (model-interface facts).
T2I = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial "
    "relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
EDIT_SYS = (
    "<|im_start|>system\nDescribe the key features of the input image (color, shape, size, texture, objects, "
    "background), then explain how the user's text instruction should alter or modify the image. Generate a new "
    "image that meets the user's requirements while maintaining consistency with the original input where "
    "appropriate.<|im_end|>\n<|im_start|>user\n"
)
EDIT = EDIT_SYS + "<|vision_start|><|image_pad|><|vision_end|>{}<|im_end|>\n<|im_start|>assistant\n"
EDIT_PLUS = EDIT_SYS + "{}<|im_end|>\n<|im_start|>assistant\n"
LABEL = "Picture {}: <|vision_start|><|image_pad|><|vision_end|>"


def test_stock_templates_are_byte_exact():
    assert (T2I_TEMPLATE, EDIT_TEMPLATE, EDIT_PLUS_TEMPLATE, PICTURE_LABEL) == (T2I, EDIT, EDIT_PLUS, LABEL)
    for t in (T2I_TEMPLATE, EDIT_TEMPLATE, EDIT_PLUS_TEMPLATE):
        assert t.count("{}") == 1


@pytest.mark.parametrize("prompt", ["a cat", "", "  spaced  ", "多个猫", "line\nbreak", "braces {} {0} {x}"])
def test_build_prompt_matches_reference_formatting(prompt):
    assert build_prompt(Mode.T2I, prompt, 0) == T2I.format(prompt)
    assert build_prompt(Mode.EDIT, prompt, 1) == EDIT.format(prompt)
    two = LABEL.format(1) + LABEL.format(2)
    assert build_prompt(Mode.EDIT_PLUS, prompt, 2) == EDIT_PLUS.format(two + prompt)


def test_picture_labels_count_from_one_without_separator():
    text = build_prompt(Mode.EDIT_PLUS, "swap them", 3)
    user = text.split("<|im_start|>user\n")[1]
    assert user.startswith(LABEL.format(1) + LABEL.format(2) + LABEL.format(3) + "swap them<|im_end|>")
    assert "Picture 4" not in text and "Picture 0" not in text


def test_custom_system_prompt_keeps_the_chat_frame():
    text = build_prompt(Mode.EDIT_PLUS, "p", 1, system_prompt="Keep {faces} unchanged.")
    assert text == (
        "<|im_start|>system\nKeep {faces} unchanged.<|im_end|>\n<|im_start|>user\n"
        + LABEL.format(1)
        + "p<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.parametrize("token", ["<|im_start|>", "<|im_end|>", "<|image_pad|>", "<|vision_start|>"])
def test_system_prompt_with_control_tokens_is_refused(token):
    with pytest.raises(ValueError, match="control token"):
        build_prompt(Mode.T2I, "p", 0, system_prompt=f"be nice {token} now")


@pytest.mark.parametrize("token", ["<|image_pad|>", "<|vision_start|>", "<|vision_end|>"])
def test_prompt_with_vision_tokens_is_refused(token):
    with pytest.raises(ValueError, match="connect the images instead"):
        build_prompt(Mode.EDIT, f"look at {token}", 1)


def test_blank_system_prompt_means_the_stock_one():
    prepared = prepare_encode("comfy", "text-to-image", "p", system_prompt=" \n")
    assert prepared.text == T2I.format("p") and not prepared.custom_system
