"""ComfyUI imports the pack cleanly and lists every node with its tooltips, category and description."""

from __future__ import annotations

import re
import sys

import pytest
from qt_harness import PACK_FOLDER, ComfyServer, ServerError
from quadtree_tile.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

PACK_NODES = sorted(NODE_CLASS_MAPPINGS)


def test_log_has_no_import_failure(comfy_server) -> None:
    # --quick-test-for-ci and the server both keep going when a pack fails to import: only the log shows it
    log = comfy_server.log()
    bad = [
        line
        for line in log.splitlines()
        if ("IMPORT FAILED" in line or "Cannot import" in line) and (PACK_FOLDER in line or "custom_nodes/qt_" in line)
    ]
    assert not bad, "ComfyUI failed to import the pack:\n" + "\n".join(bad) + "\n" + comfy_server.log_tail(60)
    assert re.search(rf"\d+\.\d+ seconds: \S*custom_nodes/{re.escape(PACK_FOLDER)}\s*$", log, re.M), (
        "the pack is missing from ComfyUI's 'Import times for custom nodes' list:\n" + comfy_server.log_tail(60)
    )


def test_every_pack_node_is_listed(object_info) -> None:
    listed = sorted(k for k in object_info if k.startswith("QuadtreeTile_"))
    assert listed == PACK_NODES, f"ComfyUI lists {listed}, the pack defines {PACK_NODES}"


@pytest.mark.parametrize("node_id", PACK_NODES)
def test_node_has_tooltips_category_description(object_info, node_id: str) -> None:
    info = object_info[node_id]
    assert info["display_name"] == NODE_DISPLAY_NAME_MAPPINGS[node_id]
    assert info["category"].startswith("quadtree_tile/"), info["category"]
    assert info["description"].strip(), f"{node_id} has no DESCRIPTION"
    assert info["python_module"] == f"custom_nodes.{PACK_FOLDER}", info["python_module"]
    untipped = [
        f"{group}.{name}"
        for group in ("required", "optional")
        for name, spec in info["input"].get(group, {}).items()
        if not (len(spec) > 1 and isinstance(spec[1], dict) and str(spec[1].get("tooltip", "")).strip())
    ]
    assert not untipped, f"{node_id}: inputs without a tooltip in /object_info: {untipped}"
    tips = info.get("output_tooltips") or []
    assert len(tips) == len(info["output"]) and all(t.strip() for t in tips), f"{node_id}: output tooltips {tips}"


def test_a_checkout_that_cannot_start_reports_its_log(tmp_path) -> None:
    # bad input: a "ComfyUI" whose main.py dies at start; the error must carry the log's last lines
    fake = tmp_path / "comfyui"
    fake.mkdir()
    (fake / "main.py").write_text("import sys\nsys.stderr.write('boom: missing requirement xyz\\n')\nsys.exit(3)\n")
    base = tmp_path / "base"
    base.mkdir()
    server = ComfyServer(comfyui=fake, python=sys.executable, base=base, port=8219)
    with pytest.raises(ServerError, match=r"(?s)exited with code 3.*boom: missing requirement xyz"):
        server.start(timeout=30)
