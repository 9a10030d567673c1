"""Copies between page-locked host memory and the compute device, overlapped with compute.

:class:`Copier` holds the whole copy discipline: one side stream brings row blocks in, another
takes them out, every copy is ``non_blocking`` between a contiguous device tensor and a
contiguous block of page-locked memory, and events order everything (a block is read only after
the copy that wrote it, written only after the copies that read it, a device tensor is reused
only after the copy that uses it). Nothing waits on the host while a run goes well.

What it asks of the hardware goes through a small :class:`Backend`: :class:`CudaBackend` is the
only CUDA-specific code; :class:`RecordingBackend` performs the same calls synchronously on any
device and records them, so CPU tests (and meta-device memory counts) see exactly what a CUDA run
would enqueue.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

log = logging.getLogger("comfyui-quadtree-tile.tiled_vae")


class Backend(Protocol):
    """Streams, events, copies and page-locked memory on one device (see module docstring)."""

    def current_stream(self) -> Any: ...

    def new_stream(self, name: str) -> Any: ...

    def on(self, stream: Any) -> contextlib.AbstractContextManager: ...

    def record(self, stream: Any) -> Any: ...

    def wait(self, stream: Any, event: Any) -> None: ...

    def wait_stream(self, stream: Any, other: Any) -> None: ...

    def record_stream(self, tensor: torch.Tensor, stream: Any) -> None: ...

    def copy(self, dst: torch.Tensor, src: torch.Tensor, non_blocking: bool) -> None: ...

    def pinned(self, nbytes: int) -> torch.Tensor: ...

    def synchronize(self, stream: Any) -> None: ...

    def host_wait(self, event: Any) -> None: ...

    def release_pinned(self) -> None: ...


class CudaBackend:
    """:class:`Backend` on one CUDA device: ``torch.cuda`` streams and events, pinned memory from
    PyTorch's caching host allocator (kept for the next run after this one frees it)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def current_stream(self) -> torch.cuda.Stream:
        return torch.cuda.current_stream(self.device)

    def new_stream(self, name: str) -> torch.cuda.Stream:
        return torch.cuda.Stream(self.device)

    def on(self, stream: torch.cuda.Stream) -> contextlib.AbstractContextManager:
        return torch.cuda.stream(stream)

    def record(self, stream: torch.cuda.Stream) -> torch.cuda.Event:
        event = torch.cuda.Event()
        event.record(stream)
        return event

    def wait(self, stream: torch.cuda.Stream, event: torch.cuda.Event) -> None:
        stream.wait_event(event)

    def wait_stream(self, stream: torch.cuda.Stream, other: torch.cuda.Stream) -> None:
        stream.wait_stream(other)

    def record_stream(self, tensor: torch.Tensor, stream: torch.cuda.Stream) -> None:
        tensor.record_stream(stream)

    def copy(self, dst: torch.Tensor, src: torch.Tensor, non_blocking: bool) -> None:
        dst.copy_(src, non_blocking=non_blocking)

    def pinned(self, nbytes: int) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)

    def synchronize(self, stream: torch.cuda.Stream) -> None:
        stream.synchronize()

    def host_wait(self, event: torch.cuda.Event) -> None:
        event.synchronize()

    def release_pinned(self) -> None:
        release_pinned()


def release_pinned() -> None:
    """Give the page-locked memory PyTorch keeps cached for later runs back to the system (for a
    host's free-memory request; runs after an error do it themselves). No-op without CUDA."""
    if not torch.cuda.is_available():
        return
    empty = getattr(getattr(torch, "accelerator", None), "empty_host_cache", None)  # torch >= 2.8
    if empty is None:
        empty = getattr(torch._C, "_host_emptyCache", None)
    if empty is not None:
        empty()


@dataclass(frozen=True)
class Record:
    """One call a :class:`RecordingBackend` received, in issue order.

    ``op``: ``record``, ``wait``, ``wait_stream``, ``record_stream``, ``copy``, ``pinned``,
    ``synchronize``, ``host_wait`` (the host waits for ``event``) or ``release``. ``stream``:
    where it was issued (for ``copy``, the stream current at the call). ``event``: the event
    recorded or waited for. ``other``: the stream waited for. For a copy: ``to_device`` (host to
    device or back), ``host`` = (buffer, first byte, end byte) of its host side in a pinned
    buffer (None if outside every one), ``nbytes``, ``non_blocking`` and ``contiguous`` (both
    sides).
    """

    op: str
    stream: str | None = None
    event: int | None = None
    other: str | None = None
    to_device: bool | None = None
    host: tuple[int, int, int] | None = None
    nbytes: int = 0
    non_blocking: bool = False
    contiguous: bool = False


class RecordingBackend:
    """:class:`Backend` that performs every call synchronously on any device and records it.

    Streams are names (``compute`` and the copier's), events numbers, "pinned" memory ordinary
    memory (the request is recorded). Copies touching the meta device move no data (there is
    none), so a meta run allocates what a CUDA run allocates. The backend holds no reference to
    the buffers it hands out (``alive`` says which still exist).
    """

    def __init__(self) -> None:
        self.log: list[Record] = []
        self._buffers: list[weakref.ref] = []
        self._current = "compute"
        self._events = 0

    def current_stream(self) -> str:
        return "compute"

    def new_stream(self, name: str) -> str:
        return name

    @contextlib.contextmanager
    def on(self, stream: str) -> Iterator[None]:
        before, self._current = self._current, stream
        try:
            yield
        finally:
            self._current = before

    def record(self, stream: str) -> int:
        self._events += 1
        self.log.append(Record("record", stream, event=self._events))
        return self._events

    def wait(self, stream: str, event: int) -> None:
        self.log.append(Record("wait", stream, event=event))

    def wait_stream(self, stream: str, other: str) -> None:
        self.log.append(Record("wait_stream", stream, other=other))

    def record_stream(self, tensor: torch.Tensor, stream: str) -> None:
        self.log.append(Record("record_stream", stream))

    def copy(self, dst: torch.Tensor, src: torch.Tensor, non_blocking: bool) -> None:
        to_device = self._locate(src) is not None
        host = self._locate(src if to_device else dst)
        contiguous = dst.is_contiguous() and src.is_contiguous()
        nbytes = src.numel() * src.element_size()
        self.log.append(Record("copy", self._current, None, None, to_device, host, nbytes, non_blocking, contiguous))
        if "meta" not in (dst.device.type, src.device.type):
            dst.copy_(src)

    def pinned(self, nbytes: int) -> torch.Tensor:
        buffer = torch.empty(nbytes, dtype=torch.uint8)
        self._buffers.append(weakref.ref(buffer))
        self.log.append(Record("pinned", nbytes=nbytes))
        return buffer

    def synchronize(self, stream: str) -> None:
        self.log.append(Record("synchronize", stream))

    def host_wait(self, event: int) -> None:
        self.log.append(Record("host_wait", event=event))

    def release_pinned(self) -> None:
        self.log.append(Record("release"))

    def alive(self) -> int:
        """How many of the buffers handed out still exist."""
        return sum(ref() is not None for ref in self._buffers)

    def _locate(self, t: torch.Tensor) -> tuple[int, int, int] | None:
        """(buffer, first byte, end byte) of ``t`` when it is a view of a buffer handed out."""
        storage = t.untyped_storage()._cdata
        for i, ref in enumerate(self._buffers):
            buffer = ref()
            if buffer is not None and buffer.untyped_storage()._cdata == storage:
                start = t.storage_offset() * t.element_size()
                return i, start, start + t.numel() * t.element_size()
        return None


def backend_for(device: torch.device) -> Backend | None:
    """The backend that moves a run's host values to and from ``device``: CUDA's, or for the
    meta device (memory counts without a GPU) the recording one. None on a CPU, which is its own
    host: there every value simply stays where it is computed."""
    if device.type == "cuda":
        return CudaBackend(device)
    if device.type == "meta":
        return RecordingBackend()
    return None


class Copier:
    """Row blocks in and out of page-locked host memory on two side streams (see module docstring).

    ``upload`` starts a host-to-device copy and returns the device tensor with the event that
    says it arrived; ``use`` makes the compute stream wait for that event before the tensor is
    read there. ``download`` copies a device tensor the compute stream has just produced into a
    host block and returns the event that says the block holds it. ``after`` events are waited
    for before a copy starts. ``throttle`` (once per tile) makes the host wait until the device
    has finished the tile before last and its copies out: the only host wait of a run, it bounds
    the copy buffers in flight to about two tiles' worth. ``finish`` orders the compute stream
    after every copy (the end of a run); ``abort`` waits on the host for every copy in flight
    (after an error, before the pinned memory is given back).
    """

    IN_FLIGHT = 2
    """Tiles the host may run ahead of the device."""

    def __init__(self, backend: Backend, device: torch.device) -> None:
        self.backend = backend
        self.device = device
        self.compute = backend.current_stream()
        self.copy_in = backend.new_stream("copy-in")
        self.copy_out = backend.new_stream("copy-out")
        self.last_download: Any = None
        self.tiles: list[tuple[Any, Any]] = []

    def pinned(self, nbytes: int) -> torch.Tensor:
        """A page-locked byte buffer; ordinary memory, with a warning, when page-locking fails."""
        try:
            return self.backend.pinned(nbytes)
        except RuntimeError as e:
            log.warning(
                "could not page-lock %.2f GiB of host memory for the activation store (%s); using ordinary "
                "memory, copies will be slower. Free some RAM or use a larger tile to need less.",
                nbytes / 2**30,
                str(e).splitlines()[0],
            )
            return torch.empty(nbytes, dtype=torch.uint8)

    def upload(self, src: torch.Tensor, after: Sequence[Any] = ()) -> tuple[torch.Tensor, Any]:
        b = self.backend
        for event in after:
            b.wait(self.copy_in, event)
        with b.on(self.copy_in):
            dst = torch.empty(src.shape, dtype=src.dtype, device=self.device)
            b.copy(dst, src, non_blocking=True)
        return dst, b.record(self.copy_in)

    def use(self, tensor: torch.Tensor, arrived: Any) -> torch.Tensor:
        self.backend.wait(self.compute, arrived)
        self.backend.record_stream(tensor, self.compute)
        return tensor

    def download(self, src: torch.Tensor, dst: torch.Tensor, after: Sequence[Any] = ()) -> Any:
        b = self.backend
        b.wait(self.copy_out, b.record(self.compute))
        for event in after:
            b.wait(self.copy_out, event)
        with b.on(self.copy_out):
            b.copy(dst, src, non_blocking=True)
        b.record_stream(src, self.copy_out)
        self.last_download = b.record(self.copy_out)
        return self.last_download

    def throttle(self) -> None:
        self.tiles.append((self.backend.record(self.compute), self.last_download))
        if len(self.tiles) > self.IN_FLIGHT:
            for event in self.tiles.pop(0):
                if event is not None:
                    self.backend.host_wait(event)

    def finish(self) -> None:
        self.backend.wait_stream(self.compute, self.copy_in)
        self.backend.wait_stream(self.compute, self.copy_out)

    def abort(self) -> None:
        self.backend.synchronize(self.copy_in)
        self.backend.synchronize(self.copy_out)

    def release_pinned(self) -> None:
        self.backend.release_pinned()
