"""What a user sees in a live ComfyUI server: the pack's messages for bad input, its log lines, interrupts.

Every case is a graph queued over HTTP (``/prompt``), read back from ``/history`` (the
``execution_error`` a user sees in the browser) or from the server log, as a new user found them
in issue 15. Bad input must get the pack's message on every path (tiled, auto and untiled),
before ComfyUI's own code fails on it with a raw error.
"""

from __future__ import annotations

import json
import re
import time

import pytest

MODES = ("auto", "tiled", "untiled")
TOLERANCE = 1e-4
"""Max |Quadtree - VAEDecode| accepted (fp32 on CPU)."""

SUMMARY = re.compile(r"\): (?:tiled|untiled), ")
"""The tiler's one log line per run (``decode (<family>): tiled, 4 tiles of up to ...``)."""


def _tiling(mode: str = "auto", tile_size: int = 64, min_tile_size: int = 0) -> dict:
    return {
        "tile_size": tile_size, "planner": "grid", "min_tile_size": min_tile_size, "mode": mode,
        "activation_store": "auto",
    }  # fmt: skip


def _node(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def decode_graph(latent: dict, vae_name: str, **tiling) -> dict:
    return {
        "1": latent,
        "2": _node("VAELoader", vae_name=vae_name),
        "3": _node("QuadtreeTile_VAEDecode", samples=["1", 0], vae=["2", 0], **_tiling(**tiling)),
        "4": _node("PreviewImage", images=["3", 0]),
    }


def encode_graph(image_file: str, vae_name: str, **tiling) -> dict:
    return {
        "1": _node("LoadImage", image=image_file),
        "2": _node("VAELoader", vae_name=vae_name),
        "3": _node("QuadtreeTile_VAEEncode", pixels=["1", 0], vae=["2", 0], **_tiling(**tiling)),
        "4": _node("SaveLatent", samples=["3", 0], filename_prefix="qt_tests/encode"),
    }


def preview_graph(image_file: str, vae_name: str, latent: dict | None = None, **tiling) -> dict:
    settings = {k: v for k, v in _tiling(**tiling).items() if k in ("tile_size", "planner", "min_tile_size")}
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": image_file}},
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": vae_name}},
        "3": {"class_type": "QuadtreeTile_TilePreview", "inputs": {"image": ["1", 0], "vae": ["2", 0], **settings}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    if latent is not None:
        graph["5"] = latent
        graph["3"]["inputs"]["samples"] = ["5", 0]
    return graph


def sd3_latent(width: int = 64, height: int = 64) -> dict:
    return {"class_type": "EmptySD3LatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}}


def sd_latent(width: int = 128, height: int = 128) -> dict:
    return {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}}


def video_latent(width: int = 64, height: int = 64, length: int = 5) -> dict:
    inputs = {"width": width, "height": height, "length": length, "batch_size": 1}
    return {"class_type": "EmptyHunyuanLatentVideo", "inputs": inputs}


def load_latent(name: str) -> dict:
    return {"class_type": "LoadLatent", "inputs": {"latent": name}}


def _said(error: dict, node_type: str, *fragments: str) -> str:
    """The message of ``error``, checked to come from ``node_type`` as a ValueError holding every fragment."""
    message = str(error.get("exception_message", "")).strip()
    assert error.get("node_type") == node_type, error
    assert error.get("exception_type") == "ValueError", error
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in the message a user sees:\n{message}"
    return message


# --- bad input: the pack's message on every path ------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_16_channel_latent_into_an_sd_vae(run_failing, mode: str) -> None:
    error = run_failing(decode_graph(sd3_latent(), "sdxl_vae.safetensors", mode=mode))
    _said(
        error,
        "QuadtreeTile_VAEDecode",
        "the latent has 16 channels, but this SD1.x/SDXL VAE takes 4-channel latents",
        "Connect the VAE of the model that made the latent",
    )


def test_the_tile_preview_says_the_same_of_a_16_channel_latent(run_failing) -> None:
    error = run_failing(preview_graph("example.png", "sdxl_vae.safetensors", sd3_latent()))
    _said(error, "QuadtreeTile_TilePreview", "the latent has 16 channels, but this SD1.x/SDXL VAE takes 4")


@pytest.mark.parametrize("mode", MODES)
def test_an_image_latent_into_a_qwen_image_vae(run_failing, mode: str) -> None:
    error = run_failing(decode_graph(sd3_latent(), "qwen_image_vae.safetensors", mode=mode))
    message = _said(
        error,
        "QuadtreeTile_VAEDecode",
        "this Wan 2.1 / Qwen-Image VAE decodes 5D video latents (batch, channels, frames, height, width)",
        "but the latent is a 4D image latent (1x16x8x8)",
    )
    assert "IndexError" not in message and "tuple index" not in message


@pytest.mark.parametrize("mode", MODES)
def test_a_video_latent_into_an_sd_vae(run_failing, mode: str) -> None:
    error = run_failing(decode_graph(video_latent(), "sdxl_vae.safetensors", mode=mode))
    _said(error, "QuadtreeTile_VAEDecode", "this SD1.x/SDXL VAE decodes 4D image latents", "a 5D video latent")


@pytest.mark.parametrize("mode", MODES)
def test_a_nan_latent_is_refused_untiled_too(run_failing, mode: str) -> None:
    error = run_failing(decode_graph(load_latent("nan_sd.latent"), "sdxl_vae.safetensors", mode=mode))
    _said(error, "QuadtreeTile_VAEDecode", "the latent contains NaN or infinite values, so the image would be broken")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("image_file", "given", "cropped"), [("narrow_1x64.png", "1x64", "0x64"), ("flat_300x7.png", "300x7", "296x0")]
)
def test_a_too_small_image_names_its_size_and_the_cropped_size(
    run_failing, mode: str, image_file: str, given: str, cropped: str
) -> None:
    expected = (
        f"the image is {given} px; cropped to a multiple of 8 px, as ComfyUI does before this VAE, it would be "
        f"{cropped} px. This SD1.x/SDXL VAE needs at least 8x8 px"
    )
    error = run_failing(encode_graph(image_file, "sdxl_vae.safetensors", mode=mode))
    message = _said(error, "QuadtreeTile_VAEEncode", expected)
    assert "Kernel size" not in message
    if mode == "auto":
        _said(run_failing(preview_graph(image_file, "sdxl_vae.safetensors")), "QuadtreeTile_TilePreview", expected)


def test_min_tile_size_above_tile_size_is_refused(run_failing) -> None:
    bad = {"vae_name": "sdxl_vae.safetensors", "tile_size": 256, "min_tile_size": 512}
    expected = "min_tile_size (512 px) is larger than tile_size (256 px)"
    _said(run_failing(decode_graph(sd_latent(), **bad)), "QuadtreeTile_VAEDecode", expected)
    _said(run_failing(encode_graph("example.png", **bad)), "QuadtreeTile_VAEEncode", expected)
    _said(run_failing(preview_graph("example.png", **bad)), "QuadtreeTile_TilePreview", expected)


def test_a_clip_text_encoder_in_the_qwen_loader_is_called_a_clip_text_encoder(run_failing) -> None:
    graph = {
        "1": _node("QuadtreeTile_QwenVLLoader", clip_name="clip_l.safetensors", device="cpu"),
        "2": _node(
            "QuadtreeTile_QwenImageTextEncode", clip=["1", 0], prompt="a cat", preset="diffusers", mode="text-to-image"
        ),
        "3": _node("PreviewAny", source=["2", 1]),
    }
    message = _said(
        run_failing(graph),
        "QuadtreeTile_QwenVLLoader",
        "clip_l.safetensors is a CLIP text encoder",
        "not the Qwen2.5-VL-7B text encoder Qwen-Image needs",
    )
    assert "another size" not in message


# --- one log line per run ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_one_log_line_per_decode_and_encode(comfy_server, run_workflow, mode: str) -> None:
    graph = decode_graph(sd_latent(), "sdxl_vae.safetensors", mode=mode)
    graph["5"] = _node("QuadtreeTile_VAEEncode", pixels=["3", 0], vae=["2", 0], **_tiling(mode))
    graph["6"] = _node("SaveLatent", samples=["5", 0], filename_prefix="qt_tests/log")
    before = len(comfy_server.log())
    run_workflow(graph)
    log = comfy_server.log()[before:]
    lines = [line for line in log.splitlines() if SUMMARY.search(line)]
    assert len(lines) == 2, f"expected one line for the decode and one for the encode:\n{log}"
    assert lines[0].startswith("decode") and lines[1].startswith("encode"), lines
    if mode == "tiled":
        assert all("tiled, 4 tiles of up to 64 px" in line for line in lines), lines
    assert "Quadtree VAE Decode:" not in log and "Quadtree VAE Encode:" not in log and " 1 tiles" not in log


def test_a_video_decode_logs_one_line_not_one_per_frame(comfy_server, run_workflow) -> None:
    for mode in MODES:
        before = len(comfy_server.log())
        run_workflow(decode_graph(video_latent(length=9), "wan_2.1_vae.safetensors", mode=mode))
        log = comfy_server.log()[before:]
        lines = [line for line in log.splitlines() if SUMMARY.search(line)]
        assert len(lines) == 1, f"{mode}: a 3-latent-frame decode logged {len(lines)} summary lines:\n{log}"


# --- interrupts -------------------------------------------------------------------------------------


def _exact_decode_graph() -> dict:
    graph = decode_graph(load_latent("sd_random.latent"), "sdxl_vae.safetensors", mode="tiled")
    graph["5"] = _node("VAEDecode", samples=["1", 0], vae=["2", 0])
    graph["6"] = _node("QuadtreeTileTest_ImageDiff", a=["3", 0], b=["5", 0], label="after interrupt")
    return graph


def test_an_interrupt_stops_a_tiled_decode_and_the_next_decode_is_exact(comfy_server, run_workflow) -> None:
    comfy_server.free()
    before = len(comfy_server.log())
    big = decode_graph(sd_latent(1024, 1024), "sdxl_vae.safetensors", mode="tiled", tile_size=128)
    prompt_id = comfy_server.queue(big)
    deadline = time.monotonic() + 120
    while "Requested to load" not in comfy_server.log()[before:]:  # the node asked for the VAE: decoding next
        assert time.monotonic() < deadline, comfy_server.log_tail(30)
        time.sleep(0.2)
    time.sleep(2.0)
    assert comfy_server.running(prompt_id), "the 1024x1024 decode in 128 px tiles ended before the interrupt"
    comfy_server.interrupt()
    result = comfy_server.wait(prompt_id, timeout=300)
    stopped = [msg for kind, msg in result.messages if kind == "execution_interrupted"]
    assert result.status == "error" and stopped, result.messages
    assert stopped[0]["node_type"] == "QuadtreeTile_VAEDecode", stopped
    after = run_workflow(_exact_decode_graph(), free=False)
    stats = json.loads(after.texts("6")[0])
    assert stats["shape_a"] == stats["shape_b"] == [1, 128, 128, 3], stats
    assert stats["max_abs"] <= TOLERANCE, stats
