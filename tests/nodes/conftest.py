import pathlib
import sys

TESTS = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))  # mirrors
sys.path.insert(0, str(TESTS / "qwen_clip"))  # qwen_clip_helpers, qwen_clip_mirror
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # comfy_sd_mirror
