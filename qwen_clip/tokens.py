"""Token-stream facts of the Qwen2.5 tokenizer: special ids, the drop point, image slots.

The encoder's output for the system turn and the user-turn header is discarded ("dropped"): the
conditioning starts right after ``<|im_start|>user\\n``. DiffSynth-Studio and diffusers hard-code
34 (text-to-image) and 64 (edit) tokens; computing the point from the ids gives the same numbers
for the stock templates and stays right for any custom system prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

IM_START = 151644
IM_END = 151645
IMAGE_PAD = 151655
USER = 872
ASSISTANT = 77091
NEWLINE = 198

STOCK_DROP = {"text-to-image": 34, "edit": 64, "edit-plus": 64}
"""The drop points DiffSynth-Studio and diffusers hard-code for the stock templates."""

TAIL = (IM_END, NEWLINE, IM_START, ASSISTANT, NEWLINE)
"""``<|im_end|>\\n<|im_start|>assistant\\n``: the last five ids of every template, kept after the drop."""


def drop_index(ids: Sequence[int]) -> int:
    """Number of leading ids the conditioning leaves out: up to and including ``<|im_start|>user\\n``.

    That is the position of the second ``<|im_start|>`` plus the ``user`` and newline ids after it
    (ComfyUI's encoder applies the same rule, so a stream built here is never cut twice).
    """
    starts = [i for i, t in enumerate(ids) if t == IM_START]
    if len(starts) < 2:
        raise ValueError(
            f"The token stream has {len(starts)} <|im_start|> token(s); a Qwen-Image prompt has a system "
            "turn and a user turn. Build it with build_prompt()."
        )
    second = starts[1]
    if list(ids[second + 1 : second + 3]) != [USER, NEWLINE]:
        raise ValueError("The second <|im_start|> is not followed by 'user\\n': the prompt is not a Qwen-Image chat.")
    return second + 3


def image_slots(ids: Sequence[int]) -> list[int]:
    """Positions of the ``<|image_pad|>`` ids, one per image, in order."""
    return [i for i, t in enumerate(ids) if t == IMAGE_PAD]
