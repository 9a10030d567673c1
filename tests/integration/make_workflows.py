"""Regenerate the UI-format workflows in ``workflows/`` from their API-format twins in ``workflows/api/``.

The API twin is the source of truth (what the suite runs); the UI file is what users drag into
ComfyUI. Widget order comes from a real server's ``/object_info``, so the UI file converts back to
exactly the twin (``test_workflows.py`` checks that). Run it against any running ComfyUI that has
the pack loaded:

    python tests/integration/make_workflows.py --url http://127.0.0.1:8210
    python tests/integration/make_workflows.py --object-info object_info.json
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKFLOWS = HERE.parent.parent / "workflows"
sys.path.insert(0, str(HERE))

from qt_harness import api_to_ui  # noqa: E402

NOTES = {
    "qwen_image_t2i_teacache": [
        "Qwen-Image text-to-image with TeaCache and Quadtree VAE Decode.\n\n"
        "Models: diffusion_models/qwen_image_fp8_e4m3fn.safetensors, "
        "text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors, vae/qwen_image_vae.safetensors "
        "(Comfy-Org/Qwen-Image_ComfyUI).",
        "TeaCache: threshold 0 computes every step (same image as without it); 0.2 to 0.4 skips more steps. "
        "Without a profile it runs 'uncalibrated' (see the log line 'computed k of n calls'). "
        "Fit a profile for your model with TeaCache Calibrate + TeaCache Fit.\n\n"
        "Quadtree VAE Decode gives the same pixels as VAE Decode; tile_size 0 picks tiles that fit in free memory.",
    ],
    "qwen_image_edit_2509": [
        "Qwen-Image-Edit-2509 with the pack's text encoder (edit-plus mode) and exact tiled VAE encode/decode.\n\n"
        "Models: diffusion_models/qwen_image_edit_2509_fp8_e4m3fn.safetensors, "
        "text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors (with the vision tower), vae/qwen_image_vae.safetensors.",
        "preset: diffsynth / diffusers reproduce those libraries' image resizing; comfy reproduces "
        "TextEncodeQwenImageEditPlus. Connect more images to image2..image4 (Picture 2, 3, ...). "
        "For the original Qwen-Image-Edit model use mode 'edit' with one image.",
    ],
    "wan21_video_decode_3d": [
        "Wan 2.1 video decode with 3D tiling (also the Qwen-Image VAE).\n\n"
        "Put a video latent saved with SaveLatent (output/latents/*.latent) into input/, or replace "
        "Load Latent with your sampler's output. Model: vae/wan_2.1_vae.safetensors.",
        "Quadtree VAE Decode tiles space only and keeps the VAE's causal time cache, so the frames equal "
        "VAE Decode's while memory is bounded by the tile.",
    ],
    "large_image_vae_roundtrip": [
        "Large-image encode/decode round trip (Flux ae.safetensors; pick sdxl_vae.safetensors for SDXL).\n\n"
        "Quadtree VAE Encode / Decode return VAE Encode / VAE Decode's results (up to float rounding) with "
        "memory bounded by the tile. Tile Preview draws where the decode cuts the image.",
    ],
}


def object_info(url: str | None, path: str | None) -> dict:
    """``/object_info`` from a server or a saved JSON file."""
    if path:
        return json.loads(Path(path).read_text())
    with urllib.request.urlopen(url.rstrip("/") + "/object_info", timeout=60) as r:  # noqa: S310 - user's URL
        return json.loads(r.read())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8210")
    ap.add_argument("--object-info", help="a saved /object_info JSON instead of --url")
    a = ap.parse_args()
    info = object_info(a.url, a.object_info)
    for twin in sorted((WORKFLOWS / "api").glob("*.json")):
        api = json.loads(twin.read_text())
        titles = {k: v["_meta"]["title"] for k, v in api.items() if "title" in v.get("_meta", {})}
        ui = api_to_ui(api, info, titles=titles, notes=NOTES.get(twin.stem, ()))
        out = WORKFLOWS / twin.name
        out.write_text(json.dumps(ui, indent=2) + "\n")
        sys.stdout.write(f"{out.relative_to(WORKFLOWS.parent)}: {len(api)} nodes\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
