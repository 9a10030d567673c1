"""Load the pack the way ComfyUI does: as a package from its folder, under a name of our choosing.

The repository root is the pack (it has ``__init__.py``); its folder name is arbitrary (a clone,
``custom_nodes/<anything>``), so tests import it as ``quadtree_tile``. The loader is the one the
benchmarks use (``benchmarks/common.load_pack``); its file is read by path because the package
that holds it is the pack this loads.
"""

import importlib.util
import pathlib
import sys

import pytest
import torch

PACK_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _load_pack(name: str = "quadtree_tile") -> None:
    spec = importlib.util.spec_from_file_location("_quadtree_tile_loader", PACK_ROOT / "benchmarks" / "common.py")
    common = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = common  # dataclasses in it look their module up there
    spec.loader.exec_module(common)
    common.load_pack(name)


_load_pack()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
