"""Token ids of the chat text with the real Qwen2.5 vocabulary: the known prefixes, drop points, labels."""

import pytest
from quadtree_tile.qwen_clip import Mode, build_prompt, drop_index, finish_tokens, image_slots, prepare_encode
from quadtree_tile.qwen_clip.tokens import TAIL
from qwen_clip_helpers import image, qwen_tokenizer

# The published prefixes (system turn + "<|im_start|>user\n") that DiffSynth and diffusers drop.
T2I_PREFIX = [151644, 8948, 198, 74785, 279, 2168, 553, 44193, 279, 1894, 11, 6083, 11, 1379, 11, 10434, 11, 12194,
              11, 1467, 11, 27979, 11871, 315, 279, 6171, 323, 4004, 25, 151645, 198, 151644, 872, 198]  # fmt: skip
EDIT_PREFIX = [151644, 8948, 198, 74785, 279, 1376, 4419, 315, 279, 1946, 2168, 320, 3423, 11, 6083, 11, 1379, 11,
               10434, 11, 6171, 11, 4004, 701, 1221, 10339, 1246, 279, 1196, 594, 1467, 7600, 1265, 11596, 476,
               5602, 279, 2168, 13, 19813, 264, 501, 2168, 429, 20027, 279, 1196, 594, 8502, 1393, 20337, 28137,
               448, 279, 4024, 1946, 1380, 8311, 13, 151645, 198, 151644, 872, 198]  # fmt: skip
PICTURE_1 = [24669, 220, 16, 25, 220, 151652, 151655, 151653]
VISION_BLOCK = [151652, 151655, 151653]


@pytest.fixture(scope="module")
def tok():
    return qwen_tokenizer()


def test_prefixes_are_the_published_34_and_64_ids(tok):
    assert len(T2I_PREFIX) == 34 and len(EDIT_PREFIX) == 64
    t2i = tok.ids(build_prompt(Mode.T2I, "a cat", 0))
    edit = tok.ids(build_prompt(Mode.EDIT, "a cat", 1))
    plus = tok.ids(build_prompt(Mode.EDIT_PLUS, "a cat", 1))
    assert t2i[:34] == T2I_PREFIX and edit[:64] == EDIT_PREFIX and plus[:64] == EDIT_PREFIX
    assert (drop_index(t2i), drop_index(edit), drop_index(plus)) == (34, 64, 64)
    assert (len(t2i), len(edit), len(plus)) == (41, 74, 79)
    cat = tok.ids("a cat")
    assert t2i[34:] == cat + list(TAIL)
    assert edit[64:] == VISION_BLOCK + cat + list(TAIL)  # the drop keeps the vision block
    assert plus[64:] == PICTURE_1 + cat + list(TAIL)


def test_picture_labels_in_order_with_digits_split(tok):
    ids = tok.ids(build_prompt(Mode.EDIT_PLUS, "x", 12))
    labels = [ids[i - 6 : i + 2] for i in image_slots(ids)]
    assert len(labels) == 12
    assert labels[0] == PICTURE_1
    assert labels[1][:3] == [24669, 220, 17]  # "Picture 2"
    assert ids[image_slots(ids)[11] - 7 : image_slots(ids)[11] - 3] == [24669, 220, 16, 17]  # "Picture 12"


def test_numbering_follows_the_connected_images_not_the_slots(tok):
    prepared = prepare_encode("diffusers", "edit-plus", "merge", [("image2", image(64, 64)), ("image4", image(64, 48))])
    ids = tok.ids(prepared.text)
    assert "Picture 1: " in prepared.text and "Picture 2: " in prepared.text and "Picture 3" not in prepared.text
    assert prepared.slots == ("image2", "image4")
    assert len(image_slots(ids)) == 2
    assert ids[64:72] == PICTURE_1


@pytest.mark.parametrize("mode,n", [(Mode.T2I, 0), (Mode.EDIT, 1), (Mode.EDIT_PLUS, 2)])
def test_custom_system_prompt_drop_point_comes_from_the_stream(tok, mode, n):
    system = "You are a careful art director. Keep text legible; 保持人物不变."
    ids = tok.ids(build_prompt(mode, "make it blue", n, system_prompt=system))
    header = tok.ids(f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n")
    assert drop_index(ids) == len(header) and ids[: len(header)] == header
    assert len(header) not in (34, 64)  # a fixed index would cut in the wrong place
    assert ids[-5:] == list(TAIL)


def test_finish_tokens_counts_vision_tokens_and_checks_the_stock_drop(tok):
    prepared = prepare_encode("diffusers", "edit-plus", "a cat", [("image1", image(1477 // 8, 2056 // 8))])
    tokens = finish_tokens(prepared, tok.ids(prepared.text))
    vision = prepared.images[0].sizes.vision_tokens
    assert tokens.drop == 64
    assert tokens.expected_length == 79 - 64 - 1 + vision
    wrong = [t if t != 872 else 1474 for t in tok.ids(prepared.text)]  # not the Qwen chat stream any more
    with pytest.raises(ValueError, match="not a Qwen-Image chat"):
        finish_tokens(prepared, wrong)


def test_diffusers_cuts_long_text_to_image_prompts_at_512_tokens(tok, caplog):
    prompt = " ".join(["cat"] * 700)
    ids = tok.ids(build_prompt(Mode.T2I, prompt, 0))
    diffusers = finish_tokens(prepare_encode("diffusers", "text-to-image", prompt), ids)
    comfy = finish_tokens(prepare_encode("comfy", "text-to-image", prompt), ids)
    diffsynth = finish_tokens(prepare_encode("diffsynth", "text-to-image", prompt), ids)
    assert diffusers.expected_length == 512 and diffusers.truncated == len(ids) - 34 - 512
    assert diffusers.ids == tuple(ids[: 34 + 512])
    assert comfy.expected_length == diffsynth.expected_length == len(ids) - 34
    assert "512" in caplog.text


def test_empty_prompt_encodes_the_bare_template(tok):
    prepared = prepare_encode("diffsynth", "text-to-image", "")
    tokens = finish_tokens(prepared, tok.ids(prepared.text))
    assert tokens.ids[tokens.drop :] == TAIL and tokens.expected_length == 5
