"""Load the pack the way ComfyUI does: as a package from its folder, under a name of our choosing.

The repository root is the pack (it has ``__init__.py``); its folder name is arbitrary (a clone,
``custom_nodes/<anything>``), so tests import it as ``quadtree_tile``.
"""

import importlib.util
import pathlib
import sys

import pytest
import torch

PACK_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = PACK_ROOT.parent / "shared"


def _load_pack(name: str = "quadtree_tile") -> None:
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        name, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_load_pack()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
