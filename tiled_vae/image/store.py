"""The full-size values of one tiled run, on the compute device or in the pinned host arena.

A device value is a ``(B, C, h, w)`` tensor that tiles read and write by slicing. A host value
is a row-major ``(h, B, w, C)`` view of the run's page-locked arena: any run of whole rows is one
contiguous block, so a band's window comes in as one copy and its core goes out as one. For a
batch of one those rows are a channels-last image as they are, so the layers run on them with no
layout conversion either way.

Ordering: a read waits for the copies that wrote its rows; a write waits for the compute that made
it, which waited for every read issued before it, so bytes a dead value shared are never
overwritten while still being read. Rows the next step reads first can be kept on the device as
they are written (``keep``): in zigzag band order they never go out and straight back.

Overlap: copies are issued where a tile needs them. The host never waits for the device except to
stay at most two tiles ahead of it (:meth:`Store.tile_done`), so the copies queue on the side
streams while the device is still computing an earlier tile: the next window comes in while the
current one computes and the last result goes out.
"""

from __future__ import annotations

from typing import Any

import torch

from ..geometry import Rect
from .placement import Placement, Value
from .transfers import Copier


def to_rows(y: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` in the host layout ``(h, B, w, C)``, contiguous (no copy for whole rows of
    a channels-last batch of one, which is what a tile computed from host rows gives)."""
    return y.permute(2, 0, 3, 1).contiguous()


def as_image(t: torch.Tensor) -> torch.Tensor:
    """Rows in the host layout ``(h, B, w, C)`` seen as ``(B, C, h, w)``, without a copy: for a
    batch of one that is the channels-last layout, which the layers take (and keep) as it is."""
    return t.permute(1, 3, 0, 2)


class Store:
    """Reads and writes the values of one run (see module docstring).

    ``sizes`` are the pyramid's level sizes; ``copier`` moves host values (needed only when the
    placement has some). Call :meth:`finish` after a run and :meth:`abort` after an error: both
    drop every tensor; ``abort`` first waits for copies in flight and then returns the pinned
    memory to the system.
    """

    def __init__(
        self,
        placement: Placement,
        sizes: list[tuple[int, int]],
        batch: int,
        dtype: torch.dtype,
        copier: Copier | None,
    ) -> None:
        self.sizes, self.batch, self.dtype = sizes, batch, dtype
        self.copier = copier
        self.tensors: dict[Value, torch.Tensor] = {}
        self.writes: dict[Value, list[tuple[int, int, Any]]] = {}
        self.kept: dict[Value, list[tuple[int, int, torch.Tensor]]] = {}
        self.kept_in: dict[Value, int] = {}
        self.step = 0
        """The step running now (the engine sets it): rows kept during step ``i`` serve step ``i + 1``."""
        self.arena: torch.Tensor | None = None
        self.arena_bytes = placement.arena_bytes
        if placement.spills() and copier is None:
            raise RuntimeError("the placement keeps values on the host but the run has no copier")

    def bind(self, value: Value, tensor: torch.Tensor) -> None:
        """Make ``tensor`` (on the device) the contents of ``value`` (the call's input)."""
        self.tensors[value] = tensor

    def read(self, value: Value, rect: Rect) -> torch.Tensor:
        """``value``'s pixels in ``rect`` as a ``(B, C, h, w)`` device tensor: a view of a device value,
        fresh rows of a host value (channels-last for a batch of one, see :func:`as_image`)."""
        if not value.on_host:
            return self.tensors[value][(..., *rect.slices())]
        self._check_rows(value, rect)
        pieces, y = [], rect.y0
        for a, b, t in sorted(self.kept.get(value, []), key=lambda k: k[0]):
            if b <= y or a >= rect.y1:
                continue
            if a > y:
                pieces.append(self._upload(value, y, a))
            pieces.append(t[max(y, a) - a : min(rect.y1, b) - a])
            y = min(rect.y1, b)
        if y < rect.y1:
            pieces.append(self._upload(value, y, rect.y1))
        self.kept[value] = [k for k in self.kept.get(value, []) if k[1] <= rect.y0 or k[0] >= rect.y1]
        return as_image(pieces[0] if len(pieces) == 1 else torch.cat(pieces))

    def write(self, value: Value, rect: Rect, y: torch.Tensor, keep: tuple[int, int] | None = None) -> None:
        """Store ``y`` (``(B, C, h, w)`` on the device) at ``rect`` of ``value``; for a host value also
        keep its rows ``keep`` (a range inside ``rect``) on the device for the next read of them."""
        if not value.on_host:
            if value not in self.tensors:
                h, w = self.sizes[value.level]
                self.tensors[value] = torch.empty((self.batch, value.channels, h, w), dtype=y.dtype, device=y.device)
            self.tensors[value][(..., *rect.slices())] = y
            return
        self._check_rows(value, rect)
        host = self._host(value)
        rows = to_rows(y)
        done = self.copier.download(rows, host[rect.y0 : rect.y1])
        writes = [w for w in self.writes.get(value, []) if w[0] < rect.y0 or w[1] > rect.y1]
        self.writes[value] = [*writes, (rect.y0, rect.y1, done)]
        if keep is not None:
            a, b = keep
            piece = rows if (a, b) == (rect.y0, rect.y1) else rows[a - rect.y0 : b - rect.y0].clone()
            self.kept.setdefault(value, []).append((a, b, piece))
            self.kept_in[value] = self.step

    def tile_done(self) -> None:
        """A tile's work is issued: keep the host at most two tiles ahead of the device, so the
        buffers of copies in flight stay bounded (no-op when nothing lives on the host)."""
        if self.copier is not None:
            self.copier.throttle()

    def drop_kept_before(self, step: int) -> None:
        """Forget the rows kept during steps before ``step`` (the step that was to read them is over)."""
        for value in [v for v, s in self.kept_in.items() if s < step]:
            self.kept.pop(value, None)
            del self.kept_in[value]

    def release(self, value: Value) -> None:
        """``value`` is read no more: drop its tensor (its arena bytes go to later values)."""
        self.tensors.pop(value, None)
        self.writes.pop(value, None)
        self.kept.pop(value, None)
        self.kept_in.pop(value, None)

    def finish(self) -> None:
        """After a run: order the compute stream after every copy and drop every tensor (the pinned
        arena goes back to PyTorch's cache, ready for the next run)."""
        if self.copier is not None:
            self.copier.finish()
        self._drop()

    def abort(self) -> None:
        """After an error: wait for the copies in flight, drop every tensor, return the pinned memory."""
        if self.copier is not None:
            self.copier.abort()
        pinned = self.arena is not None
        self._drop()
        if pinned:
            self.copier.release_pinned()

    def _drop(self) -> None:
        self.tensors.clear()
        self.writes.clear()
        self.kept.clear()
        self.kept_in.clear()
        self.arena = None

    def _host(self, value: Value) -> torch.Tensor:
        """The arena view of ``value`` in the host layout."""
        view = self.tensors.get(value)
        if view is None:
            if self.arena is None:
                self.arena = self.copier.pinned(self.arena_bytes)  # once per run, at the first host write
            h, w = self.sizes[value.level]
            size = torch.finfo(self.dtype).bits // 8
            count = self.batch * value.channels * h * w
            raw = self.arena[value.offset : value.offset + count * size]
            view = raw.view(self.dtype).view(h, self.batch, w, value.channels)
            self.tensors[value] = view
        return view

    def _upload(self, value: Value, y0: int, y1: int) -> torch.Tensor:
        if not _covers(self.writes.get(value, []), y0, y1):
            raise RuntimeError(f"rows {y0}:{y1} of a stored activation are read before they were written")
        t, arrived = self.copier.upload(self._host(value)[y0:y1], self._written(value, y0, y1))
        return self.copier.use(t, arrived)

    def _written(self, value: Value, y0: int, y1: int) -> list[Any]:
        """The events of the copies that wrote any of rows ``y0:y1``."""
        return [e for a, b, e in self.writes.get(value, []) if a < y1 and b > y0]

    def _check_rows(self, value: Value, rect: Rect) -> None:
        if rect.x0 != 0 or rect.x1 != self.sizes[value.level][1]:
            raise RuntimeError(f"a host-stored activation is accessed by {rect}, not by whole rows")


def _covers(writes: list[tuple[int, int, Any]], y0: int, y1: int) -> bool:
    """True when the written ranges cover rows ``y0:y1``."""
    y = y0
    for a, b, _ in sorted(writes, key=lambda w: w[0]):
        if a > y:
            break
        y = max(y, b)
    return y >= y1
