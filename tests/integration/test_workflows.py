"""Every shipped workflow: only real nodes, its UI file equals its API twin, and it runs in real ComfyUI.

The runs use random-weight models of the real architectures (full-size VAEs, a full-width
1-block Qwen-Image transformer, a full-width 1-layer Qwen2.5-VL encoder with the full vision
tower) at small sizes so that a 2-core CPU finishes them. What each run changes from the shipped
graph is listed in its ``adapt_*`` function; the VAE results are compared with ComfyUI's own
untiled ``VAEDecode`` / ``VAEEncode`` on the same inputs through the test-only diff nodes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from qt_harness import PACK_FOLDER, WorkflowError, missing_nodes, ui_to_api

PACK_ROOT = Path(__file__).resolve().parent.parent.parent
WORKFLOWS = PACK_ROOT / "workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
NAMES = [p.stem for p in UI_FILES]

TOLERANCE = 1e-4
"""Max |tiled - untiled| accepted (fp32 on CPU; measured values are about 1e-5)."""

TEST_TE = {"class_type": "QuadtreeTileTest_FewLayerQwenTE", "inputs": {"layers": 1}}


def twin(name: str) -> dict:
    """The API twin of a shipped workflow, without the frontend-only ``_meta`` titles."""
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}


def ui(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def _node(graph: dict, cls: str) -> str:
    ids = [k for k, v in graph.items() if v["class_type"] == cls]
    assert len(ids) == 1, f"expected one {cls} in the workflow, found {ids}"
    return ids[0]


def _all(graph: dict, cls: str) -> list[str]:
    return [k for k, v in graph.items() if v["class_type"] == cls]


def _add_diff(graph: dict, kind: str, a: list, b: list, label: str) -> str:
    nid = str(900 + len([k for k in graph if int(k) >= 900]))
    graph[nid] = {"class_type": f"QuadtreeTileTest_{kind}Diff", "inputs": {"a": a, "b": b, "label": label}}
    return nid


def _add(graph: dict, cls: str, **inputs) -> str:
    nid = str(900 + len([k for k in graph if int(k) >= 900]))
    graph[nid] = {"class_type": cls, "inputs": inputs}
    return nid


def _force_tiles(graph: dict, tile: int) -> None:
    """Small test images still go through the tiled path, in several tiles."""
    for cls in ("QuadtreeTile_VAEDecode", "QuadtreeTile_VAEEncode"):
        for nid in _all(graph, cls):
            graph[nid]["inputs"].update(tile_size=tile, mode="tiled")
    for nid in _all(graph, "QuadtreeTile_TilePreview"):
        graph[nid]["inputs"]["tile_size"] = tile


def _test_te(graph: dict) -> None:
    """Swap the pack's loader for the test loader: the 1-layer file would fail its 28-layer check."""
    nid = _node(graph, "QuadtreeTile_QwenVLLoader")
    clip_name = graph[nid]["inputs"]["clip_name"]
    graph[nid] = {"class_type": TEST_TE["class_type"], "inputs": {**TEST_TE["inputs"], "clip_name": clip_name}}


def _exact_decode(graph: dict, label: str) -> list[str]:
    """For each Quadtree VAE Decode, decode the same latent with VAEDecode and diff the images."""
    out = []
    for nid in _all(graph, "QuadtreeTile_VAEDecode"):
        inp = graph[nid]["inputs"]
        ref = _add(graph, "VAEDecode", samples=inp["samples"], vae=inp["vae"])
        out.append(_add_diff(graph, "Image", [nid, 0], [ref, 0], f"{label} decode {nid}"))
    return out


def _exact_encode(graph: dict, label: str) -> list[str]:
    out = []
    for nid in _all(graph, "QuadtreeTile_VAEEncode"):
        inp = graph[nid]["inputs"]
        ref = _add(graph, "VAEEncode", pixels=inp["pixels"], vae=inp["vae"])
        out.append(_add_diff(graph, "Latent", [nid, 0], [ref, 0], f"{label} encode {nid}"))
    return out


# --- what each run changes, and what it checks ----------------------------------------------------


def adapt_qwen_image_t2i_teacache(graph: dict) -> dict:
    """128x128 instead of 1328x1328, 6 steps, TeaCache at its largest threshold from the first step so
    that it must skip; 1-layer text encoder through the test loader."""
    _test_te(graph)
    graph[_node(graph, "EmptySD3LatentImage")]["inputs"].update(width=128, height=128)
    graph[_node(graph, "KSampler")]["inputs"].update(steps=6)
    graph[_node(graph, "QuadtreeTile_TeaCacheQwenImage")]["inputs"].update(
        threshold=5.0, start=0.0, end=1.0, min_steps=0, max_consecutive_skips=2
    )
    _force_tiles(graph, 64)
    return {"diffs": _exact_decode(graph, "qwen"), "size": (128, 128), "teacache_runs": 1}


def adapt_qwen_image_edit_2509(graph: dict) -> dict:
    """The 320x256 example scaled to 0.02 MP instead of 1 MP, 4 steps; the two encodes run the vision
    tower on the 384x384-area copy but get no VAE, because a ~1024x1024 reference latent (encode plus
    4096 reference tokens per step) takes many minutes on 2 CPU cores. Their info outputs go to
    PreviewAny: with no VAE connected they must not list a VAE copy."""
    _test_te(graph)
    graph[_node(graph, "ImageScaleToTotalPixels")]["inputs"]["megapixels"] = 0.02
    graph[_node(graph, "KSampler")]["inputs"].update(steps=4)
    graph[_node(graph, "QuadtreeTile_TeaCacheQwenImage")]["inputs"].update(min_steps=0)
    infos = []
    for nid in _all(graph, "QuadtreeTile_QwenImageTextEncode"):
        graph[nid]["inputs"].pop("vae", None)
        infos.append(_add(graph, "PreviewAny", source=[nid, 1]))
    _force_tiles(graph, 64)
    diffs = _exact_decode(graph, "edit") + _exact_encode(graph, "edit")
    return {"diffs": diffs, "size": (160, 128), "teacache_runs": 1, "infos_without_vae": infos}


def adapt_wan21_video_decode_3d(graph: dict) -> dict:
    """A seeded random 2x16x24 latent (5 frames of 192x128), 64 px tiles."""
    _force_tiles(graph, 64)
    return {"diffs": _exact_decode(graph, "wan"), "frames": 5, "size": (192, 128)}


def adapt_large_image_vae_roundtrip(graph: dict, vae_name: str = "ae.safetensors") -> dict:
    """The 320x256 example with 128 px tiles (several tiles per axis) instead of 1024."""
    graph[_node(graph, "VAELoader")]["inputs"]["vae_name"] = vae_name
    _force_tiles(graph, 128)
    diffs = _exact_encode(graph, vae_name) + _exact_decode(graph, vae_name)
    return {"diffs": diffs, "size": (320, 256)}


RUNS: dict[str, Callable[[dict], dict]] = {
    "qwen_image_t2i_teacache": adapt_qwen_image_t2i_teacache,
    "qwen_image_edit_2509": adapt_qwen_image_edit_2509,
    "wan21_video_decode_3d": adapt_wan21_video_decode_3d,
    "large_image_vae_roundtrip": adapt_large_image_vae_roundtrip,
    "large_image_vae_roundtrip[sdxl]": lambda g: adapt_large_image_vae_roundtrip(g, "sdxl_vae.safetensors"),
}


# --- static checks ----------------------------------------------------------------------------------


def test_shipped_workflows_are_covered() -> None:
    assert NAMES, f"no workflows in {WORKFLOWS}"
    twins = sorted(p.stem for p in (WORKFLOWS / "api").glob("*.json"))
    assert twins == NAMES, f"UI files {NAMES} and API twins {twins} differ"
    assert sorted({k.split("[")[0] for k in RUNS}) == NAMES, "every workflow needs a run in RUNS"


@pytest.mark.parametrize("name", NAMES)
def test_workflow_nodes_exist(object_info, name: str) -> None:
    missing = missing_nodes(ui(name), object_info) + missing_nodes(twin(name), object_info)
    assert not missing, f"workflows/{name}.json uses nodes this ComfyUI + pack do not define: {sorted(set(missing))}"
    foreign = {
        cls: object_info[cls]["python_module"]
        for cls in {v["class_type"] for v in twin(name).values()}
        if not (
            object_info[cls]["python_module"] in ("nodes", "comfy_extras")
            or object_info[cls]["python_module"].startswith("comfy_extras.")
            or object_info[cls]["python_module"] == f"custom_nodes.{PACK_FOLDER}"
        )
    }
    assert not foreign, f"workflows/{name}.json uses nodes from outside ComfyUI core and this pack: {foreign}"


@pytest.mark.parametrize("name", NAMES)
def test_ui_file_converts_to_its_api_twin(object_info, name: str) -> None:
    assert ui_to_api(ui(name), object_info) == twin(name), (
        f"workflows/{name}.json and workflows/api/{name}.json differ; regenerate the UI file with "
        "tests/integration/make_workflows.py"
    )


def test_unknown_node_is_named(object_info) -> None:
    # bad input: a workflow that references a node nobody defines fails with that node's name
    graph = ui("large_image_vae_roundtrip")
    graph["nodes"][0] = {**graph["nodes"][0], "type": "QuadtreeTile_NoSuchNode"}
    assert missing_nodes(graph, object_info) == ["QuadtreeTile_NoSuchNode"]
    with pytest.raises(WorkflowError, match="QuadtreeTile_NoSuchNode"):
        ui_to_api(graph, object_info)


# --- runs -------------------------------------------------------------------------------------------

_TEACACHE = re.compile(r"computed (\d+) of (\d+) calls \(skipped (\d+) of (\d+) steps\)")


@pytest.mark.parametrize("run", list(RUNS))
def test_workflow_runs(comfy_server, run_workflow, run: str) -> None:
    graph = twin(run.split("[")[0])
    expect = RUNS[run](graph)
    log_before = len(comfy_server.log())
    result = run_workflow(graph, timeout=900)
    log = comfy_server.log()[log_before:]

    for nid in expect["diffs"]:
        (text,) = result.texts(nid)
        stats = json.loads(text)
        assert stats["shape_a"] == stats["shape_b"], stats
        assert stats["finite"], stats
        assert stats["max_abs"] <= TOLERANCE, f"tiled differs from ComfyUI's untiled result: {stats}"

    saved = [
        img
        for nid, out in result.outputs.items()
        if graph[nid]["class_type"] in ("SaveImage", "SaveVideo")
        for img in out.get("images", [])
    ]
    assert saved, f"the workflow saved nothing: {result.outputs}"
    for item in saved:
        path = comfy_server.base / item["type"] / item["subfolder"] / item["filename"]
        assert path.is_file() and path.stat().st_size > 0, path
        if path.suffix == ".png":
            with Image.open(path) as im:
                assert im.size == expect["size"], (path, im.size)
    if "frames" in expect:
        decode = json.loads(result.texts(expect["diffs"][0])[0])
        assert decode["shape_a"][0] == expect["frames"], decode
        assert tuple(decode["shape_a"][1:3][::-1]) == expect["size"], decode

    for nid in expect.get("infos_without_vae", []):  # the encode's info output, as PreviewAny shows it
        (info,) = result.texts(nid)
        assert "Picture 1 (image1)" in info and "vision" in info, info
        assert "VAE copy" not in info and "reference latents" not in info, f"no VAE is connected:\n{info}"

    if expect.get("teacache_runs"):
        summaries = _TEACACHE.findall(log)
        assert len(summaries) == expect["teacache_runs"], f"TeaCache summary lines: {summaries}\n{log[-3000:]}"
        computed, calls, skipped, steps = map(int, summaries[0])
        assert computed <= calls and skipped <= steps, summaries
        if run == "qwen_image_t2i_teacache":  # threshold 5 from the first step: it must skip
            assert skipped >= 1 and computed < calls, summaries
