"""Write deterministic random-weight models of the real architectures for the real-ComfyUI suite.

Run with ComfyUI's Python (it imports ComfyUI's own model classes to get exact key names and
shapes; the modules are built on the ``meta`` device, so nothing full-size is allocated):

    $COMFYUI_PYTHON tests/integration/qt_models.py --comfyui $COMFYUI_PATH --out DIR [--only sd,wan21]

What it writes (fp16 .safetensors, byte-identical on every run for one seed):

* ``vae/qt_random_sd.safetensors``: SD 1.x/SDXL-layout ``AutoencoderKL`` at full size (ch 128),
  the only size ``comfy.sd.VAE`` builds for that family (83.7 M parameters, 160 MiB).
* ``vae/qt_random_flux.safetensors``: the same encoder/decoder with 16 latent channels and no
  ``quant_conv``/``post_quant_conv`` (the Flux / SD3 layout, ``AutoencodingEngine``).
* ``vae/qt_random_wan21.safetensors``: Wan 2.1 VAE (also Qwen-Image's) at full size (dim 96).
* ``diffusion_models/qt_random_qwen_image.safetensors``: a full-width Qwen-Image transformer
  (3072 wide, 24 heads, 3584 text width) with only ``--qwen-layers`` blocks (default 1); ComfyUI
  reads the block count from the weights.
* ``text_encoders/qt_random_qwen25vl.safetensors``: a full-width Qwen2.5-VL 7B text encoder
  (3584 wide, full vocabulary, full 32-block vision tower) with only ``--te-layers`` language
  layers (default 1). ComfyUI does NOT read the layer count from these weights (its config says
  28): stock ``CLIPLoader`` would leave 27 layers uninitialised, so the suite loads it through the
  test-only node ``QuadtreeTileTest_FewLayerQwenTE`` (``probe_pack``), which passes ComfyUI's own
  ``<name>_model_config`` option with the layer count to ``comfy.sd.load_clip``.

Initialisation: kaiming-uniform bounds (1/sqrt(fan_in)) for matrices and convolutions, 1 for
norm scales, 0 for biases (ComfyUI's layers skip initialisation, so it must be explicit), from one
seeded generator in sorted key order.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

GENERATOR_VERSION = "1"
"""Bumped whenever the written bytes change, so cached copies are regenerated."""

FILES = {
    "sd": "vae/qt_random_sd.safetensors",
    "flux": "vae/qt_random_flux.safetensors",
    "wan21": "vae/qt_random_wan21.safetensors",
    "qwen_image": "diffusion_models/qt_random_qwen_image_1block.safetensors",
    "qwen_te": "text_encoders/qt_random_qwen25vl_1layer.safetensors",
}
"""Model kind -> path under ComfyUI's ``models/`` folder."""


def _import_comfy(comfyui: str) -> None:
    """Make ComfyUI importable on the CPU (as ``main.py --cpu`` does) before any model module loads."""
    if comfyui not in sys.path:
        sys.path.insert(0, comfyui)
    from comfy.cli_args import args

    args.cpu = True


def _meta_shapes(build: Callable[[], torch.nn.Module]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a ComfyUI module's state dict, built on the meta device (no memory)."""
    with torch.device("meta"):
        module = build()
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _random_weights() -> Callable[..., dict[str, torch.Tensor]]:
    """The pack's one randomiser, ``benchmarks/common.random_weights`` (loaded by path: this script
    runs in ComfyUI's Python, where the pack is not a package)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "common.py"
    spec = importlib.util.spec_from_file_location("_qt_models_common", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.random_weights


def sd_shapes(z_channels: int = 4, quant: bool = True) -> dict[str, tuple[int, ...]]:
    """ComfyUI's full-size 2D KL autoencoder (``comfy.ldm.models.autoencoder.AutoencoderKL``)."""
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = {
        "double_z": True, "z_channels": z_channels, "resolution": 256, "in_channels": 3, "out_ch": 3,
        "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
    }  # fmt: skip
    shapes = _meta_shapes(lambda: AutoencoderKL(ddconfig=ddconfig, embed_dim=z_channels))
    if not quant:  # Flux / SD3 files have no quant convs; comfy.sd.VAE then builds AutoencodingEngine
        shapes = {k: v for k, v in shapes.items() if not k.startswith(("quant_conv.", "post_quant_conv."))}
    return shapes


def wan21_shapes() -> dict[str, tuple[int, ...]]:
    """ComfyUI's full-size Wan 2.1 VAE (``comfy.ldm.wan.vae.WanVAE``, dim 96), also Qwen-Image's VAE."""
    import comfy.ldm.wan.vae as wan_vae

    return _meta_shapes(
        lambda: wan_vae.WanVAE(
            dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
            temperal_downsample=[False, True, True], dropout=0.0,
        )
    )  # fmt: skip


def qwen_image_shapes(layers: int) -> dict[str, tuple[int, ...]]:
    """ComfyUI's Qwen-Image transformer at full width with ``layers`` blocks."""
    import comfy.ops
    from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel

    return _meta_shapes(
        lambda: QwenImageTransformer2DModel(num_layers=layers, operations=comfy.ops.disable_weight_init)
    )


def qwen_te_shapes(layers: int) -> dict[str, tuple[int, ...]]:
    """ComfyUI's Qwen2.5-VL 7B text encoder (language model + vision tower) with ``layers`` layers."""
    import comfy.ops
    from comfy.text_encoders.llama import Qwen25_7BVLI

    return _meta_shapes(lambda: Qwen25_7BVLI({"num_hidden_layers": layers}, torch.float16, None, comfy.ops.manual_cast))


def write(kind: str, path: str, seed: int = 0, qwen_layers: int = 1, te_layers: int = 1) -> str:
    """Write one model file (see the module docstring); returns its path."""
    from safetensors.torch import save_file

    shapes = {
        "sd": lambda: sd_shapes(4, quant=True),
        "flux": lambda: sd_shapes(16, quant=False),
        "wan21": wan21_shapes,
        "qwen_image": lambda: qwen_image_shapes(qwen_layers),
        "qwen_te": lambda: qwen_te_shapes(te_layers),
    }[kind]()
    tensors = {k: v.to(torch.float16) for k, v in _random_weights()(shapes, seed).items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".part"
    save_file(tensors, tmp, metadata={"generator": f"comfyui-quadtree-tile tests/integration v{GENERATOR_VERSION}"})
    os.replace(tmp, path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI checkout")
    ap.add_argument("--out", required=True, help="a models/ folder (files go to its vae/, ... subfolders)")
    ap.add_argument("--only", default=",".join(FILES), help=f"comma-separated kinds out of {','.join(FILES)}")
    ap.add_argument("--qwen-layers", type=int, default=1)
    ap.add_argument("--te-layers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if not a.comfyui:
        ap.error("--comfyui (or COMFYUI_PATH) is required")
    _import_comfy(os.path.abspath(a.comfyui))
    for kind in a.only.split(","):
        t0 = time.perf_counter()
        path = write(kind, os.path.join(a.out, FILES[kind]), a.seed, a.qwen_layers, a.te_layers)
        sys.stdout.write(
            f"{kind}: {os.path.getsize(path) / 2**20:.0f} MiB in {time.perf_counter() - t0:.1f} s -> {path}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
