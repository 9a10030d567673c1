"""Real-ComfyUI integration suite: opt-in through ``COMFYUI_PATH``; fixtures shared by every test here.

Environment:

* ``COMFYUI_PATH`` (required, else the folder is skipped with one line, from
  ``test_comfyui_required.py``): a ComfyUI checkout.
* ``COMFYUI_PYTHON``: the Python that has ComfyUI's requirements (a venv's ``bin/python``). When
  unset, the suite uses the interpreter running pytest if it can import them, and otherwise fails
  saying to set ``COMFYUI_PYTHON``.
* ``QT_INT_PORTS`` (default ``8210-8219``): the first free port in the range serves ComfyUI.
* ``QT_INT_MODEL_CACHE`` (default ``~/.cache/comfyui-quadtree-tile/integration-models``): generated
  random-weight models, reused across runs (about 6 GB; regenerated when the generator changes).
* ``QT_INT_KEEP=1``: keep the temporary base directory (``$TMPDIR/qt-int-*``) and its server log.

Fixtures for every integration test (``test_pack_loads.py``, ``test_workflows.py``,
``test_user_messages.py``, ``test_teacache.py``):

* ``comfy_server``: a running :class:`qt_harness.ComfyServer` (session scope) on 127.0.0.1 with a
  temporary base directory: the pack linked as ``custom_nodes/comfyui-quadtree-tile`` (the
  README's install name, ``qt_harness.PACK_FOLDER``), every test-only node pack in a sub-folder here
  beside it as ``qt_<folder>``, and the generated models under the file names users have (see
  :data:`MODEL_LINKS`). ``comfy_server.base`` is that directory; ``.log()`` the server log.
* ``object_info``: ``/object_info`` of that server.
* ``run_workflow(graph, timeout=600, free=True)``: queue an API graph, wait, fail the test with the
  node's error and the log tail when it fails; returns a :class:`qt_harness.RunResult`. ``free``
  unloads all models first to keep the server's memory at one workflow's worth.
* ``run_failing(graph, timeout=600)``: queue an API graph that must fail; returns the
  ``execution_error`` of ``/history`` (``node_type``, ``exception_type``, ``exception_message``, ...)
  and fails the test when the prompt succeeds.
* ``input_files``: names of the generated files in the server's ``input/`` folder.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
HERE = Path(__file__).resolve().parent
if not COMFYUI_PATH:
    # test_comfyui_required.py reports the one skip line; nothing else here is collected
    collect_ignore_glob = [p.name for p in HERE.glob("test_*.py") if p.name != "test_comfyui_required.py"]
PACK_ROOT = HERE.parent.parent


def _load(name: str):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


qt_harness = _load("qt_harness")

TEST_NODE_PACKS = sorted(p.parent for p in HERE.glob("*/__init__.py"))
"""Test-only node packs (sub-folders with ``__init__.py``, e.g. ``probe_pack``), each linked into
``custom_nodes`` as ``qt_<folder>``."""

MODEL_LINKS = {
    "vae/qwen_image_vae.safetensors": "wan21",
    "vae/wan_2.1_vae.safetensors": "wan21",
    "vae/sdxl_vae.safetensors": "sd",
    "vae/ae.safetensors": "flux",
    "diffusion_models/qwen_image_fp8_e4m3fn.safetensors": "qwen_image",
    "diffusion_models/qwen_image_edit_2509_fp8_e4m3fn.safetensors": "qwen_image",
    "text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors": "qwen_te",
}
"""File names the shipped workflows use -> generated model kind (random weights, see qt_models.py).

Qwen-Image and Qwen-Image-Edit share one architecture (edit adds reference tokens at run time), so
both names point at the same random transformer. The text encoder has 1 language layer: load it
with ``QuadtreeTileTest_FewLayerQwenTE`` (layers=1), not with a stock loader."""

QWEN_IMAGE_LAYERS = 1
QWEN_TE_LAYERS = 1


def _python() -> str:
    explicit = os.environ.get("COMFYUI_PYTHON")
    if explicit:
        if not os.access(explicit, os.X_OK):
            pytest.fail(f"COMFYUI_PYTHON={explicit} is not an executable Python", pytrace=False)
        return explicit
    probe = subprocess.run(  # noqa: S603 - our interpreter, fixed arguments
        [sys.executable, "-c", "import aiohttp, torchsde, einops, transformers, safetensors, alembic"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.fail(
            f"COMFYUI_PYTHON is not set and {sys.executable} cannot import ComfyUI's requirements "
            "(aiohttp, torchsde, ...). Set COMFYUI_PYTHON to the python of ComfyUI's venv, "
            "e.g. COMFYUI_PYTHON=/path/to/comfyui-venv/bin/python.",
            pytrace=False,
        )
    return sys.executable


def _free_port() -> int:
    first, _, last = os.environ.get("QT_INT_PORTS", "8210-8219").partition("-")
    for port in range(int(first), int(last or first) + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail(f"no free port in QT_INT_PORTS={first}-{last} for ComfyUI", pytrace=False)


def _comfy_version(path: Path) -> str:
    try:
        text = (path / "comfyui_version.py").read_text()
    except OSError:
        return "unknown version"
    return text.split("=", 1)[-1].strip().strip("\"'") if "=" in text else "unknown version"


@pytest.fixture(scope="session")
def comfy_setup() -> tuple[Path, str]:
    """(ComfyUI checkout, Python to run it with), checked."""
    path = Path(COMFYUI_PATH).expanduser().resolve()
    if not (path / "main.py").is_file():
        pytest.fail(f"COMFYUI_PATH={COMFYUI_PATH} has no main.py: point it at a ComfyUI checkout", pytrace=False)
    return path, _python()


@pytest.fixture(scope="session")
def comfy_models(comfy_setup: tuple[Path, str]) -> dict[str, Path]:
    """Generated random-weight models (kind -> file), cached across runs."""
    comfyui, python = comfy_setup
    models = _load("qt_models")
    default = Path.home() / ".cache" / "comfyui-quadtree-tile" / "integration-models"
    cache = Path(os.environ.get("QT_INT_MODEL_CACHE", default)) / f"v{models.GENERATOR_VERSION}"
    wanted = {kind: cache / rel for kind, rel in models.FILES.items()}
    missing = [kind for kind, p in wanted.items() if not p.is_file()]
    if missing:
        cmd = [
            python, str(HERE / "qt_models.py"), "--comfyui", str(comfyui), "--out", str(cache),
            "--only", ",".join(missing), "--qwen-layers", str(QWEN_IMAGE_LAYERS), "--te-layers", str(QWEN_TE_LAYERS),
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:
            pytest.fail(f"generating models failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}", pytrace=False)
    return wanted


def _example_png(path: Path, width: int, height: int) -> None:
    """A deterministic test picture: smooth gradients, a disc and fine stripes (some busy, some flat)."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = x / width
    g = y / height
    disc = ((x - width * 0.3) ** 2 + (y - height * 0.4) ** 2) < (min(width, height) * 0.2) ** 2
    stripes = (np.sin(x * 0.9) * np.cos(y * 0.7) > 0) & (x > width * 0.6) & (y > height * 0.5)
    b = 0.5 + 0.4 * disc - 0.3 * stripes
    rgb = np.stack([r, g, b], -1).clip(0, 1)
    Image.fromarray((rgb * 255).round().astype(np.uint8)).save(path)


def _video_latent(path: Path, frames: int, height: int, width: int) -> None:
    """A seeded random Wan 2.1 video latent (16 channels) in ComfyUI's ``.latent`` format."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(7)
    latent = torch.randn(1, 16, frames, height, width, generator=g)
    save_file({"latent_tensor": latent.contiguous(), "latent_format_version_0": torch.tensor([])}, str(path))


def _image_latent(path: Path, channels: int, height: int, width: int) -> None:
    """A seeded random image latent (SD: 4 channels) in ComfyUI's ``.latent`` format."""
    import torch
    from safetensors.torch import save_file

    latent = torch.randn(1, channels, height, width, generator=torch.Generator().manual_seed(11))
    save_file({"latent_tensor": latent, "latent_format_version_0": torch.tensor([])}, str(path))


def _nan_latent(path: Path, channels: int, height: int, width: int) -> None:
    """A zero SD latent with one NaN, as a sampler that overflowed in fp16 leaves it."""
    import torch
    from safetensors.torch import save_file

    latent = torch.zeros(1, channels, height, width)
    latent[0, 0, height // 2, width // 2] = float("nan")
    save_file({"latent_tensor": latent, "latent_format_version_0": torch.tensor([])}, str(path))


INPUT_FILES = {
    "example.png": (_example_png, (320, 256)),
    "qt_large.png": (_example_png, (384, 320)),
    "wan_video.latent": (_video_latent, (2, 16, 24)),
    "narrow_1x64.png": (_example_png, (1, 64)),
    "flat_300x7.png": (_example_png, (300, 7)),
    "nan_sd.latent": (_nan_latent, (4, 16, 16)),
    "sd_random.latent": (_image_latent, (4, 16, 16)),
}
"""Files written into the server's input/ folder: name -> (writer, size arguments)."""


def _clip_l_file(path: Path) -> None:
    """A CLIP-L text encoder's layout (ComfyUI's ``clip_l.safetensors`` keys, [768]-wide attention
    biases, 2 of its 12 layers), zeros: what a user picks by mistake in the Qwen2.5-VL loader."""
    import torch
    from safetensors.torch import save_file

    tensors = {"text_model.embeddings.token_embedding.weight": torch.zeros(8, 768)}
    for i in range(2):
        for p in ("q", "k", "v", "out"):
            tensors[f"text_model.encoder.layers.{i}.self_attn.{p}_proj.weight"] = torch.zeros(768, 768)
            tensors[f"text_model.encoder.layers.{i}.self_attn.{p}_proj.bias"] = torch.zeros(768)
    save_file(tensors, str(path))


MODEL_FILES = {"text_encoders/clip_l.safetensors": _clip_l_file}
"""Small files written into the server's models/ folder: path -> writer."""


@pytest.fixture(scope="session")
def comfy_base(comfy_models: dict[str, Path]):
    """A temporary ComfyUI base directory with the pack, the probe pack, models and inputs."""
    base = Path(tempfile.mkdtemp(prefix="qt-int-"))
    for sub in ("custom_nodes", "input", "output", "temp", "user"):
        (base / sub).mkdir()
    (base / "custom_nodes" / qt_harness.PACK_FOLDER).symlink_to(PACK_ROOT, target_is_directory=True)
    for probe in TEST_NODE_PACKS:
        (base / "custom_nodes" / f"qt_{probe.name}").symlink_to(probe, target_is_directory=True)
    for kind, path in comfy_models.items():
        link = base / "models" / _load("qt_models").FILES[kind]
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
    for rel, kind in MODEL_LINKS.items():
        (base / "models" / rel).symlink_to(comfy_models[kind])
    for name, (writer, size) in INPUT_FILES.items():
        writer(base / "input" / name, *size)
    for rel, write in MODEL_FILES.items():
        write(base / "models" / rel)
    yield base
    if os.environ.get("QT_INT_KEEP") != "1":
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def input_files(comfy_base: Path) -> list[str]:
    return sorted(INPUT_FILES)


_SUMMARY: list[str] = []


@pytest.fixture(scope="session")
def comfy_server(comfy_setup: tuple[Path, str], comfy_base: Path):
    """ComfyUI 0.3.x serving on loopback for the whole session; stopped by PID at the end."""
    comfyui, python = comfy_setup
    server = qt_harness.ComfyServer(comfyui=comfyui, python=python, base=comfy_base, port=_free_port())
    t0 = time.perf_counter()
    try:
        server.start()
    except qt_harness.ServerError as e:
        pytest.fail(str(e), pytrace=False)
    _SUMMARY.append(
        f"ComfyUI {_comfy_version(comfyui)} at {comfyui} (python {python}), port {server.port}, "
        f"base {comfy_base}, started in {time.perf_counter() - t0:.1f} s"
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def object_info(comfy_server) -> dict:
    return comfy_server.object_info()


@pytest.fixture
def run_workflow(comfy_server, request):
    """Run an API graph on the server; fails the test with the node error and the log tail."""

    def run(graph: dict, timeout: float = 600, free: bool = True):
        if free:
            comfy_server.free()
        comfy_server.reset_peak_rss()
        try:
            result = comfy_server.run(graph, timeout=timeout)
        except (qt_harness.WorkflowError, qt_harness.ServerError) as e:
            pytest.fail(f"{e}\n--- server log tail ---\n{comfy_server.log_tail(30)}", pytrace=False)
        if result.status != "success":
            pytest.fail(
                f"workflow failed: {result.error()}\n--- server log tail ---\n{comfy_server.log_tail(30)}",
                pytrace=False,
            )
        rss = comfy_server.peak_rss_gib()
        _SUMMARY.append(
            f"{request.node.name}: prompt ran in {result.wall_s:.1f} s"
            + (f", server peak resident memory {rss:.2f} GiB" if rss is not None else "")
        )
        return result

    return run


@pytest.fixture
def run_failing(comfy_server):
    """Run an API graph that must fail; returns the ``execution_error`` message of ``/history``."""

    def run(graph: dict, timeout: float = 600) -> dict:
        comfy_server.free()
        try:
            result = comfy_server.run(graph, timeout=timeout)
        except (qt_harness.WorkflowError, qt_harness.ServerError) as e:
            pytest.fail(f"{e}\n--- server log tail ---\n{comfy_server.log_tail(30)}", pytrace=False)
        errors = [msg for kind, msg in result.messages if kind == "execution_error"]
        if result.status == "success" or not errors:
            pytest.fail(f"the prompt was expected to fail but ended {result.status}: {result.messages}", pytrace=False)
        return errors[0]

    return run


def pytest_terminal_summary(terminalreporter) -> None:
    for line in _SUMMARY:
        terminalreporter.write_line(f"[integration] {line}")
