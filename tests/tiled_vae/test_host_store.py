"""The CPU activation store, run here as a CUDA run would run it, through the recording copy backend.

On a GPU the 2D path keeps what does not fit on the device in page-locked host memory and moves it
with non-blocking copies on two side streams. The same code runs here with ``RecordingBackend``,
which performs every call synchronously and records it, so these tests see what a CUDA run would
enqueue: the result (exact on both layouts), the copy plan (one pinned arena, contiguous blocks,
non-blocking, on the side streams), the ordering of every pair of copies touching the same bytes,
and the cleanup after an error or an interrupt.
"""

import pytest
import torch
from copy_log import happens_before, ordering
from exactness import assert_matches_untiled
from quadtree_tile.tiled_vae import TilingConfig, tiled
from quadtree_tile.tiled_vae.families import detect
from quadtree_tile.tiled_vae.geometry import Rect
from quadtree_tile.tiled_vae.image import calls
from quadtree_tile.tiled_vae.image.engine import Engine, RunOptions, placement_for
from quadtree_tile.tiled_vae.image.placement import Placement, Value, band_plan
from quadtree_tile.tiled_vae.image.store import Store
from quadtree_tile.tiled_vae.image.transfers import Copier, RecordingBackend
from vae_models import comfy_pair, diffusers_pair

LAYOUTS = {"comfyui": comfy_pair, "diffusers": diffusers_pair}
CPU_STORE = TilingConfig(tile_size=64, mode="tiled", activation_store="cpu")


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def pair(request):
    return LAYOUTS[request.param]()


@pytest.fixture
def backends(monkeypatch):
    """Give the 2D path a recording backend on the CPU (where it would otherwise keep everything
    where it computes); the list holds the backend of each run."""
    made = []

    def backend_for(device):
        made.append(RecordingBackend())
        return made[-1]

    monkeypatch.setattr(calls, "backend_for", backend_for)
    return made


@pytest.mark.parametrize("batch", [1, 2])
def test_decode_through_the_host_store_matches_untiled(pair, backends, batch):
    """Batch 1 runs channels-last on the host rows as they are; batch 2 converts them."""
    _, dec = pair
    z = torch.randn(batch, 4, 24, 40)
    with torch.no_grad():
        ref = dec(z)
        with tiled(dec, CPU_STORE) as hook:
            out = dec(z)
    assert "pinned CPU" in hook.handler.report.store
    assert len(hook.handler.report.plan) >= 3
    assert all(r.x0 == 0 and r.x1 == 320 for r in hook.handler.report.plan)  # full-width bands
    assert_matches_untiled(out, ref)


def test_encode_through_the_host_store_matches_untiled(pair, backends):
    enc, _ = pair
    x = torch.rand(1, 3, 24 * 8 + 3, 40 * 8 + 5) * 2 - 1
    with torch.no_grad():
        ref = enc(x)
        with tiled(enc, CPU_STORE) as hook:
            out = enc(x)
    assert "pinned CPU" in hook.handler.report.store
    assert_matches_untiled(out, ref)


def test_store_split_between_device_and_host_matches_untiled(pair):
    """With a device budget below the store, the coarse values stay and the rest goes to the host."""
    _, dec = pair
    program = detect(dec).build(dec)
    z = torch.randn(1, 4, 24, 40)
    full = (192, 320)
    everything = placement_for(program, 1, full, torch.float32, float("inf")).device_bytes()
    backend = RecordingBackend()
    engine = Engine(
        program, band_plan(full, 64, 8), full, RunOptions(torch.device("cpu"), everything / 3, backend=backend), z.dtype
    )
    with torch.no_grad():
        ref = dec(z)
        out = engine.run(z)
    placement = engine.placement
    assert placement.spills() and 0 < placement.device_bytes() <= everything / 3
    assert all(not v.on_host for v in placement.values if v.level == program.levels)  # the latent level stays
    assert_matches_untiled(out, ref)


@pytest.fixture(scope="module")
def decode_log():
    """The recorded copies of one decode through the host store (ComfyUI layout, batch 1)."""
    _, dec = comfy_pair()
    program = detect(dec).build(dec)
    z = torch.randn(1, 4, 24, 40)
    full = (192, 320)
    backend = RecordingBackend()
    options = RunOptions(torch.device("cpu"), 0.0, backend=backend)
    engine = Engine(program, band_plan(full, 64, 8), full, options, z.dtype)
    with torch.no_grad():
        engine.run(z)
    return backend, engine.placement


def test_copies_are_non_blocking_contiguous_blocks_of_one_pinned_arena(decode_log):
    backend, placement = decode_log
    pinned = [r for r in backend.log if r.op == "pinned"]
    assert [r.nbytes for r in pinned] == [placement.arena_bytes]  # one page-locked allocation per run
    copies = [r for r in backend.log if r.op == "copy"]
    assert any(c.to_device for c in copies) and any(not c.to_device for c in copies)
    for c in copies:
        assert c.non_blocking and c.contiguous
        assert c.stream == ("copy-in" if c.to_device else "copy-out")
        assert c.host is not None and c.host[0] == 0 and c.host[2] <= placement.arena_bytes  # inside the arena
    assert not [r for r in backend.log if r.op in ("synchronize", "release")]  # nothing waits for a whole stream
    assert [(r.op, r.stream, r.other) for r in backend.log[-2:]] == [
        ("wait_stream", "compute", "copy-in"),
        ("wait_stream", "compute", "copy-out"),
    ]
    assert backend.alive() == 0  # the arena is handed back when the run ends


def test_every_copy_waits_for_the_copies_it_depends_on(decode_log):
    """Read after write and write after read on the same host bytes are ordered on any GPU."""
    backend, _ = decode_log
    copies = ordering(backend.log)
    ins = [c for c in copies if c.record.to_device]
    outs = [c for c in copies if not c.record.to_device]
    pairs = 0
    for a in copies:
        for b in outs if a.record.to_device else ins:
            if a.position < b.position and a.overlaps(b):
                assert happens_before(a, b), f"copy {a.position} may still run when copy {b.position} starts"
                pairs += 1
    assert pairs > 10


def test_downloaded_tensors_and_uploaded_ones_are_held_until_used(decode_log):
    """Each device tensor a copy reads or fills is marked used by the stream that uses it last, so
    the allocator cannot hand its memory out while that stream still needs it."""
    backend, _ = decode_log
    log = backend.log
    for i, r in enumerate(log):
        if r.op == "copy" and not r.to_device:
            assert (log[i + 1].op, log[i + 1].stream) == ("record_stream", "copy-out")
    ins = sum(r.op == "copy" and r.to_device for r in log)
    assert sum(r.op == "record_stream" and r.stream == "compute" for r in log) == ins


def test_the_host_runs_at_most_two_tiles_ahead(decode_log):
    backend, _ = decode_log
    waits = [r for r in backend.log if r.op == "host_wait"]
    assert waits
    positions = {r.event: i for i, r in enumerate(backend.log) if r.op == "record"}
    for i, r in enumerate(backend.log):
        if r.op == "host_wait":
            later_tiles = sum(x.op == "record" and x.stream == "compute" for x in backend.log[positions[r.event] : i])
            assert later_tiles >= 2  # it waits for the tile before last, never for the one it just issued


def _failing_after(module: torch.nn.Module, calls_before: int) -> None:
    count = [0]
    original = module.forward

    def forward(x):
        count[0] += 1
        if count[0] > calls_before:
            raise RuntimeError("simulated fault inside a tile")
        return original(x)

    module.forward = forward


def test_fault_inside_a_tile_waits_for_copies_and_releases_the_pinned_memory(backends):
    _, dec = comfy_pair()
    z = torch.randn(1, 4, 24, 40)
    _failing_after(dec.up[0].block[0].conv2, 2)
    with pytest.raises(RuntimeError, match="simulated fault"), torch.no_grad(), tiled(dec, CPU_STORE):
        dec(z)
    backend = backends[-1]
    assert [(r.op, r.stream) for r in backend.log[-3:]] == [
        ("synchronize", "copy-in"),
        ("synchronize", "copy-out"),
        ("release", None),
    ]
    assert backend.alive() == 0
    assert "forward" not in dec.__dict__


def test_interrupt_between_tiles_releases_the_pinned_memory(backends):
    _, dec = comfy_pair()
    z = torch.randn(1, 4, 24, 40)
    with torch.no_grad():
        before = dec(z)
    ticks = []

    def interrupt():
        ticks.append(1)
        if len(ticks) == 20:
            raise KeyboardInterrupt("user interrupt")

    with pytest.raises(KeyboardInterrupt), torch.no_grad(), tiled(dec, CPU_STORE, check_interrupt=interrupt):
        dec(z)
    assert backends[-1].log[-1].op == "release" and backends[-1].alive() == 0
    assert "forward" not in dec.__dict__
    with torch.no_grad():
        assert torch.equal(dec(z), before)


def _host_value(rows: int, width: int, channels: int) -> tuple[Placement, Value]:
    x = Value(0, channels, 0, -1, 0, 0)
    value = Value(1, channels, 0, 0, 1, rows * width * channels * 4, on_host=True)
    return Placement([x, value], [], arena_bytes=value.nbytes), value


def test_rows_kept_on_the_device_are_not_copied_back():
    """Zigzag order: the next step's first window is the band just written plus a halo row from the
    band before; kept as they were written, none of them makes a round trip through the host."""
    placement, value = _host_value(8, 5, 3)
    backend = RecordingBackend()
    store = Store(placement, [(8, 5)], 1, torch.float32, Copier(backend, torch.device("cpu")))
    image = torch.randn(1, 3, 8, 5)
    store.write(value, Rect(0, 4, 0, 5), image[..., 0:4, :], keep=(3, 4))
    store.write(value, Rect(4, 8, 0, 5), image[..., 4:8, :], keep=(4, 8))
    copies_out = sum(r.op == "copy" for r in backend.log)
    assert torch.equal(store.read(value, Rect(3, 8, 0, 5)), image[..., 3:8, :])
    assert sum(r.op == "copy" for r in backend.log) == copies_out  # nothing came in
    assert torch.equal(store.read(value, Rect(0, 8, 0, 5)), image)
    ins = [r for r in backend.log if r.op == "copy" and r.to_device]
    assert [r.nbytes for r in ins] == [8 * 5 * 3 * 4]  # the kept rows were used once, then dropped


def test_a_window_of_a_host_value_is_one_copy_of_whole_rows():
    placement, value = _host_value(8, 5, 3)
    backend = RecordingBackend()
    store = Store(placement, [(8, 5)], 1, torch.float32, Copier(backend, torch.device("cpu")))
    image = torch.randn(1, 3, 8, 5)
    store.write(value, Rect(0, 8, 0, 5), image)
    assert torch.equal(store.read(value, Rect(2, 6, 0, 5)), image[..., 2:6, :])
    ins = [r for r in backend.log if r.op == "copy" and r.to_device]
    assert [(r.host[1], r.host[2]) for r in ins] == [(2 * 5 * 3 * 4, 6 * 5 * 3 * 4)]
    with pytest.raises(RuntimeError, match="not by whole rows"):
        store.read(value, Rect(0, 8, 1, 5))


class UnpinnableBackend(RecordingBackend):
    """A machine that cannot page-lock the memory the store asks for."""

    def pinned(self, nbytes):
        raise RuntimeError("CUDA error: out of memory (simulated cudaHostAlloc failure)")


def test_store_falls_back_to_ordinary_memory_when_page_locking_fails(caplog):
    _, dec = comfy_pair()
    program = detect(dec).build(dec)
    z = torch.randn(1, 4, 16, 24)
    full = (128, 192)
    options = RunOptions(torch.device("cpu"), 0.0, backend=UnpinnableBackend())
    with torch.no_grad():
        ref = dec(z)
        out = Engine(program, band_plan(full, 64, 8), full, options, z.dtype).run(z)
    assert "could not page-lock" in caplog.text and "copies will be slower" in caplog.text
    assert_matches_untiled(out, ref)
