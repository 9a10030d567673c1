import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))  # tests/: mirrors
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # comfy_sd_mirror
