"""The one skip line of the real-ComfyUI suite when ``COMFYUI_PATH`` is unset (see conftest.py)."""

import os

import pytest

if not os.environ.get("COMFYUI_PATH"):
    pytest.skip(
        "real-ComfyUI integration suite: set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON) to run it",
        allow_module_level=True,
    )
