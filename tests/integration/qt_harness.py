"""Run a real ComfyUI server for the integration suite, talk to it, and convert workflows.

Standard library only: the suite runs under the pack's test venv, while ComfyUI itself runs as a
subprocess with ComfyUI's own Python (``COMFYUI_PYTHON``).

* :class:`ComfyServer` starts ``main.py --cpu`` on 127.0.0.1 with a base directory, waits for
  ``/system_stats``, and stops the process by its PID (never by name). A server that dies or never
  answers raises :class:`ServerError` with the last lines of its log.
* :meth:`ComfyServer.run` posts an API-format graph to ``/prompt`` and waits on ``/history``.
* :func:`ui_to_api` turns a UI-format workflow (what users drag into ComfyUI) into the API format
  ``/prompt`` takes, using ``/object_info`` for the order of each node's widget values;
  :func:`api_to_ui` does the reverse for generating the shipped UI files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACK_FOLDER = "comfyui-quadtree-tile"
"""The folder name the README's install step gives the pack in ``custom_nodes`` (with dashes: not a
Python identifier, which ComfyUI's loader and the test nodes must cope with)."""

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
"""Input types the frontend shows as widgets (plus list-valued combos); everything else is a socket."""

FRONTEND_ONLY = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
"""UI-only node types: they never reach /prompt and are not in /object_info."""


class ServerError(RuntimeError):
    """ComfyUI failed to start or died; the message ends with the last lines of its log."""


class WorkflowError(RuntimeError):
    """A workflow was rejected by ``/prompt`` or failed while executing."""


@dataclass
class RunResult:
    """What ``/history`` says about one finished prompt."""

    prompt_id: str
    status: str
    outputs: dict[str, Any]
    messages: list[Any]
    wall_s: float

    def error(self) -> str:
        """The execution error, formatted for a test failure ('' when the run succeeded)."""
        for kind, msg in self.messages:
            if kind == "execution_error":
                tb = "".join(msg.get("traceback") or [])[-3000:]
                return (
                    f"node {msg.get('node_id')} ({msg.get('node_type')}): {msg.get('exception_type')}: "
                    f"{str(msg.get('exception_message')).strip()}\n{tb}"
                )
        return "" if self.status == "success" else f"status {self.status}"

    def texts(self, node_id: str) -> list[str]:
        """The ``text`` UI output of one node (the probe nodes report through it)."""
        return list(self.outputs.get(node_id, {}).get("text", []))


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text[-lines:])


@dataclass
class ComfyServer:
    """A ComfyUI server process on loopback, with its own base directory, port, log and PID file."""

    comfyui: Path
    python: str
    base: Path
    port: int
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base / "comfyui.log"

    @property
    def pid_path(self) -> Path:
        return self.base / "comfyui.pid"

    def log(self) -> str:
        """The server log so far (ComfyUI logs to stderr, which goes to the same file)."""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def start(self, timeout: float = 240.0) -> None:
        """Start ``main.py --cpu`` and wait until ``/system_stats`` answers; raise ServerError otherwise."""
        cmd = [
            self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(self.base), "--database-url", "sqlite:///:memory:",
            "--disable-api-nodes", "--disable-auto-launch", *self.extra_args,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own command line, no shell
                cmd, cwd=self.comfyui, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        self.pid_path.write_text(str(self.process.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"ComfyUI ({self.comfyui}) exited with code {self.process.returncode} while starting. "
                    f"Last lines of {self.log_path}:\n{self.log_tail()}"
                )
            try:
                self.get("/system_stats", timeout=2)
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.5)
        self.stop()
        raise ServerError(
            f"ComfyUI ({self.comfyui}) did not answer on port {self.port} within {timeout:.0f} s. "
            f"Last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server by its PID: SIGTERM, then SIGKILL after 15 s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self.pid_path.unlink(missing_ok=True)

    def reset_peak_rss(self) -> None:
        """Reset the server's peak-memory counter (Linux ``clear_refs`` 5), so peaks are per prompt."""
        if self.process is not None:
            try:
                Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
            except OSError:  # not Linux, or not allowed: peaks then span the whole session
                return

    def peak_rss_gib(self) -> float | None:
        """The server's peak resident memory so far (Linux ``VmHWM``), or None when unknown."""
        if self.process is None:
            return None
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
        except OSError:
            return None
        return None

    # --- HTTP -------------------------------------------------------------------------------

    def _call(self, path: str, payload: Any = None, timeout: float = 60) -> tuple[int, Any]:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - loopback URL we built
                body = r.read()
                return r.status, json.loads(body) if body else None
        except urllib.error.HTTPError as e:  # /prompt answers 400 with a JSON body on validation errors
            body = e.read()
            try:
                return e.code, json.loads(body) if body else None
            except json.JSONDecodeError:
                return e.code, body.decode(errors="replace")

    def get(self, path: str, timeout: float = 60) -> Any:
        code, body = self._call(path, timeout=timeout)
        if code != 200:
            raise WorkflowError(f"GET {path} answered {code}: {body}")
        return body

    def object_info(self) -> dict[str, Any]:
        return self.get("/object_info")

    def free(self) -> None:
        """Ask ComfyUI to unload every model and free memory (done between prompts)."""
        self._call("/free", {"unload_models": True, "free_memory": True})

    def queue(self, graph: dict[str, Any]) -> str:
        """Post an API-format graph to ``/prompt``; returns its prompt id. Raises WorkflowError when
        ``/prompt`` rejects it."""
        code, resp = self._call("/prompt", {"prompt": graph, "client_id": str(uuid.uuid4())})
        if code != 200:
            raise WorkflowError(f"/prompt rejected the graph ({code}): {json.dumps(resp, indent=1)[:4000]}")
        return resp["prompt_id"]

    def running(self, prompt_id: str) -> bool:
        """Whether ``/queue`` lists the prompt as the one executing now."""
        queue = self.get("/queue")
        return any(item[1] == prompt_id for item in queue.get("queue_running", []))

    def interrupt(self) -> None:
        """Ask ComfyUI to stop the prompt it is executing (``/interrupt``)."""
        self._call("/interrupt", {})

    def wait(self, prompt_id: str, timeout: float = 600, t0: float | None = None) -> RunResult:
        """Wait on ``/history`` until the prompt ends (success, error or interrupted)."""
        t0 = time.perf_counter() if t0 is None else t0
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(f"ComfyUI died while running a prompt. Last lines:\n{self.log_tail()}")
            _, hist = self._call(f"/history/{prompt_id}")
            entry = (hist or {}).get(prompt_id)
            status = (entry or {}).get("status") or {}
            if status.get("status_str") in ("success", "error") and status.get("completed") is not None:
                break
            if time.perf_counter() - t0 > timeout:
                self.interrupt()
                raise WorkflowError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")
            time.sleep(0.25)
        return RunResult(
            prompt_id, status["status_str"], entry.get("outputs", {}), status.get("messages", []),
            time.perf_counter() - t0,
        )  # fmt: skip

    def run(self, graph: dict[str, Any], timeout: float = 600) -> RunResult:
        """Queue an API-format graph and wait for it; raises WorkflowError when /prompt rejects it."""
        t0 = time.perf_counter()
        return self.wait(self.queue(graph), timeout, t0)


# --- workflow formats ---------------------------------------------------------------------------


def _is_widget(spec: Any) -> bool:
    kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    options = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _extra_widget_values(name: str, spec: Any) -> int:
    """Frontend widgets with no input behind them that still take a slot in ``widgets_values``."""
    options = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}
    extra = 0
    if options.get("control_after_generate") or (name in ("seed", "noise_seed") and spec[0] == "INT"):
        extra += 1  # the "control after generate" combo (fixed / increment / randomize)
    if options.get("image_upload") or options.get("video_upload") or options.get("audio_upload"):
        extra += 1  # the upload button's value
    return extra


def widget_inputs(info: dict[str, Any]) -> list[tuple[str, Any]]:
    """A node's widget inputs in the order the frontend lays them out (required, then optional)."""
    inputs = info["input"]
    order = info.get("input_order", {})
    out = []
    for group in ("required", "optional"):
        specs = inputs.get(group, {})
        for name in order.get(group, list(specs)):
            if _is_widget(specs[name]):
                out.append((name, specs[name]))
    return out


def node_ids(graph: dict[str, Any]) -> set[str]:
    """Node class ids used by a workflow in either format."""
    if "nodes" in graph:
        return {n["type"] for n in graph["nodes"] if n["type"] not in FRONTEND_ONLY}
    return {n["class_type"] for n in graph.values()}


def missing_nodes(graph: dict[str, Any], object_info: dict[str, Any]) -> list[str]:
    """Node class ids a workflow needs that this ComfyUI does not define."""
    return sorted(node_ids(graph) - set(object_info))


def ui_to_api(ui: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """Convert a UI-format workflow into the API format, as the frontend's "Export (API)" does.

    Muted (mode 2) nodes are dropped; bypassed (mode 4) nodes are not supported (an error names
    them). Notes and other frontend-only nodes (not in ``object_info`` and without links) are skipped.
    """
    missing = missing_nodes(ui, object_info)
    if missing:
        raise WorkflowError(f"the workflow uses nodes this ComfyUI does not define: {', '.join(missing)}")
    links = {link[0]: link for link in ui.get("links", [])}
    api: dict[str, Any] = {}
    for node in ui["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) == 2:
            continue
        if node.get("mode", 0) == 4:
            raise WorkflowError(f"node {node['id']} ({node['type']}) is bypassed; ui_to_api does not resolve bypasses")
        info = object_info[node["type"]]
        inputs: dict[str, Any] = {}
        values = list(node.get("widgets_values") or [])
        if isinstance(node.get("widgets_values"), dict):  # some V3 nodes store a name -> value mapping
            inputs.update(node["widgets_values"])
            values = []
        pos = 0
        for name, spec in widget_inputs(info):
            if pos < len(values):
                inputs[name] = values[pos]
            pos += 1 + _extra_widget_values(name, spec)
        for slot in node.get("inputs", []):
            link = links.get(slot.get("link"))
            if link is not None:
                inputs[slot["name"]] = [str(link[1]), link[2]]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def _depths(api: dict[str, Any]) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(nid: str, stack: tuple[str, ...] = ()) -> int:
        if nid in depth:
            return depth[nid]
        if nid in stack:
            raise WorkflowError(f"the graph has a cycle through node {nid}")
        parents = [v[0] for v in api[nid]["inputs"].values() if isinstance(v, list) and len(v) == 2]
        depth[nid] = 1 + max((visit(p, (*stack, nid)) for p in parents), default=-1)
        return depth[nid]

    for nid in api:
        visit(nid)
    return depth


def api_to_ui(
    api: dict[str, Any],
    object_info: dict[str, Any],
    titles: dict[str, str] | None = None,
    notes: Iterable[str] = (),
    control: str = "fixed",
) -> dict[str, Any]:
    """Build a UI-format workflow (frontend schema 0.4) from an API graph, laid out by graph depth.

    ``titles`` gives node titles; each of ``notes`` becomes a Note node above the graph.
    """
    titles = titles or {}
    depth = _depths(api)
    column_tops: dict[int, int] = {}
    link_id = 0
    links: list[list[Any]] = []
    out_links: dict[tuple[str, int], list[int]] = {}
    nodes: list[dict[str, Any]] = []
    order = sorted(api, key=lambda n: (depth[n], int(n)))
    for k, nid in enumerate(order):
        node = api[nid]
        info = object_info[node["class_type"]]
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        ui_inputs = []
        values: list[Any] = []
        widget_names = dict(widget_inputs(info))
        for name, spec in widget_inputs(info):
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            value = node["inputs"].get(name, options.get("default"))
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                value = options.get("default")  # linked widget: the UI keeps a value behind the link
            values.append(value)
            extra = _extra_widget_values(name, spec)
            if options.get("control_after_generate") or (name in ("seed", "noise_seed") and spec[0] == "INT"):
                values.append(control)
                extra -= 1
            values.extend(["image"] * extra)
        for name, value in node["inputs"].items():
            if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)):
                continue
            link_id += 1
            src, slot = value
            kind = object_info[api[src]["class_type"]]["output"][slot]
            links.append([link_id, int(src), slot, int(nid), len(ui_inputs), kind])
            out_links.setdefault((src, slot), []).append(link_id)
            entry = {
                "name": name,
                "type": specs[name][0] if not isinstance(specs[name][0], list) else "COMBO",
                "link": link_id,
            }
            if name in widget_names:
                entry["widget"] = {"name": name}
            ui_inputs.append(entry)
        for name, spec in specs.items():  # unconnected sockets still show as inputs
            if name not in widget_names and name not in {i["name"] for i in ui_inputs}:
                ui_inputs.append({"name": name, "type": spec[0], "link": None})
        height = 140 + 34 * (len(values) + len(ui_inputs))
        top = column_tops.get(depth[nid], 200)  # stack a column's nodes by their heights: no overlap
        column_tops[depth[nid]] = top + height + 40
        entry_node = {
            "id": int(nid),
            "type": node["class_type"],
            "pos": [40 + 380 * depth[nid], top],
            "size": [340, height],
            "flags": {},
            "order": k,
            "mode": 0,
            "inputs": ui_inputs,
            "outputs": [],
            "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": values,
        }
        if nid in titles:
            entry_node["title"] = titles[nid]
        nodes.append(entry_node)
    for node in nodes:
        info = object_info[node["type"]]
        names = info.get("output_name", info["output"])
        node["outputs"] = [
            {"name": names[i], "type": kind, "links": out_links.get((str(node["id"]), i), []), "slot_index": i}
            for i, kind in enumerate(info["output"])
        ]
    next_id = max(int(n) for n in api) + 1
    for k, text in enumerate(notes):
        nodes.append({
            "id": next_id + k, "type": "Note", "pos": [40 + 420 * k, -120], "size": [400, 260], "flags": {},
            "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": [text],
        })  # fmt: skip
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(api, sort_keys=True))),
        "revision": 0,
        "last_node_id": max(n["id"] for n in nodes),
        "last_link_id": link_id,
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
        "version": 0.4,
    }
