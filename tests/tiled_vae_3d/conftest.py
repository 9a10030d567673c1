import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))  # tests/: mirrors, exactness
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # wan_models
