import pathlib
import sys

import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # comfy_mirror, qwen_mirror, harness


@pytest.fixture(autouse=True)
def _one_thread():
    """The mirrored model is tiny: one thread is ~10x faster than two on a busy 2-core CI machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
