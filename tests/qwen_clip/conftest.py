import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # qwen_clip_helpers, qwen_clip_mirror
