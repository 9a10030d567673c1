"""Read a :class:`RecordingBackend` log the way a GPU would run it: which copy is ordered before which.

Every stream runs its work in issue order; ``record`` marks a point of a stream, ``wait`` makes a
stream's later work wait for such a point, ``wait_stream`` for everything issued on another stream
so far, ``host_wait`` makes the host (and what it issues next) wait for a point. :func:`ordering`
gives each copy a vector clock, so "copy A is complete before copy B starts on any GPU" is
``happens_before(a, b)``, whatever the streams' relative speeds.
"""

from __future__ import annotations

from dataclasses import dataclass

from quadtree_tile.tiled_vae.image.transfers import Record

STREAMS = ("compute", "copy-in", "copy-out")


@dataclass(frozen=True)
class Copy:
    """A copy of the log with its position, its stream's tick and the clock it started at."""

    position: int
    record: Record
    stream: str
    tick: int
    clock: dict[str, int]

    def overlaps(self, other: Copy) -> bool:
        a, b = self.record.host, other.record.host
        return a is not None and b is not None and a[0] == b[0] and a[1] < b[2] and b[1] < a[2]


def ordering(log: list[Record]) -> list[Copy]:
    """The copies of ``log`` with the clocks the streams give them (see module docstring)."""
    clocks = {s: dict.fromkeys(STREAMS, 0) for s in STREAMS}
    host = dict.fromkeys(STREAMS, 0)
    points: dict[int, dict[str, int]] = {}
    copies = []

    def merge(into: dict[str, int], other: dict[str, int]) -> None:
        for s, t in other.items():
            into[s] = max(into[s], t)

    for i, r in enumerate(log):
        if r.op in ("record", "wait", "wait_stream", "copy"):
            merge(clocks[r.stream], host)  # work is issued by the host, after what it waited for
        if r.op == "record":
            clocks[r.stream][r.stream] += 1
            points[r.event] = dict(clocks[r.stream])
        elif r.op == "wait":
            merge(clocks[r.stream], points[r.event])
        elif r.op == "wait_stream":
            merge(clocks[r.stream], clocks[r.other])
        elif r.op == "host_wait":
            merge(host, points[r.event])
        elif r.op == "copy":
            clocks[r.stream][r.stream] += 1
            copies.append(Copy(i, r, r.stream, clocks[r.stream][r.stream], dict(clocks[r.stream])))
    return copies


def happens_before(a: Copy, b: Copy) -> bool:
    """True when copy ``a`` is complete before copy ``b`` starts on any device."""
    return b.clock[a.stream] >= a.tick and (a.stream != b.stream or a.tick < b.tick)
