"""A series' points, packed in chunks: one row per series per chunk, not per point.

A log post adds its points of each series to the series' latest chunk while that one is
small (`GROW`), so a training that posts a few records at a time still makes chunks of
hundreds of points, and starts new chunks of at most `MAX` points otherwise. The
rewrite of a small chunk costs at most `GROW` points a series a post. Points in a chunk
are sorted by (step, wall time, seq); chunks of one series may overlap in steps (a
resumed run logs a step again), so a read sorts what it decodes.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import Connection, bindparam, func, select, update

from ..downsample import group_starts
from ..tables import chunks
from .sql import bulk_insert

MAX = 4096
GROW = 256
COLUMNS = {"steps": "<i8", "seqs": "<i8", "epochs": "<i8", "walls": "<f8", "vals": "<f8"}
INSERTED = ("series_id", "first_step", "last_step", "count", "nonfinite", *COLUMNS)


class Chunk(NamedTuple):
    """Where a chunk lies, without its points."""

    id: int
    first_step: int
    last_step: int
    count: int
    nonfinite: int


class Decoded(NamedTuple):
    """Points of one series as arrays, sorted by (step, wall time, seq)."""

    steps: np.ndarray
    seqs: np.ndarray
    epochs: np.ndarray
    walls: np.ndarray
    vals: np.ndarray

    def take(self, index) -> Decoded:
        return Decoded(*(a[index] for a in self))

    def __len__(self) -> int:
        return len(self.steps)


def _sorted(points: Decoded) -> Decoded:
    return points.take(np.lexsort((points.seqs, points.walls, points.steps)))


def _packed(series_id: int, p: Decoded) -> tuple:
    return (
        series_id,
        int(p.steps[0]),
        int(p.steps[-1]),
        len(p),
        int(np.count_nonzero(~np.isfinite(p.vals))),
        *(np.ascontiguousarray(a, dtype).tobytes() for a, dtype in zip(p, COLUMNS.values())),
    )


def unpack(row: Any) -> Decoded:
    """A chunk row's points (the row needs the columns of `COLUMNS`, by name)."""
    return Decoded(*(np.frombuffer(getattr(row, name), dtype).astype(dtype[1:]) for name, dtype in COLUMNS.items()))


def append(conn: Connection, series_ids: np.ndarray, points: Decoded, tails: dict[int, Any]) -> None:
    """Add points sorted by (series, step, wall, seq) to their series' chunks: `tails` are
    the small latest chunks to grow (`small_tails`). Writes only: it may be pipelined."""
    starts = group_starts(series_ids)
    ends = np.append(starts[1:], len(series_ids))
    inserts: list[tuple] = []
    updates: list[dict[str, Any]] = []
    for start, end in zip(starts.tolist(), ends.tolist()):
        sid = int(series_ids[start])
        part = points.take(slice(start, end))
        tail = tails.get(sid)
        if tail is not None:
            old = unpack(tail)
            part = _sorted(Decoded(*(np.concatenate([a, b]) for a, b in zip(old, part))))
        pieces = [part.take(slice(i, i + MAX)) for i in range(0, len(part), MAX)]
        if tail is not None:
            updates.append({"chunk_id": tail.id, **dict(zip(INSERTED, _packed(sid, pieces.pop(0))))})
        inserts.extend(_packed(sid, piece) for piece in pieces)
    if updates:
        conn.execute(REWRITE, updates)
    bulk_insert(conn, chunks, inserts, INSERTED)


# Built once: every post runs them.
_NEWEST = (
    select(func.max(chunks.c.id).label("id"))
    .where(chunks.c.series_id.in_(bindparam("series_ids", expanding=True)))
    .group_by(chunks.c.series_id)
    .subquery()
)
SMALL_TAILS = select(chunks).join(_NEWEST, chunks.c.id == _NEWEST.c.id).where(chunks.c.count < GROW)
REWRITE = update(chunks).where(chunks.c.id == bindparam("chunk_id"))


def small_tails(conn: Connection, series_ids: Collection[int]) -> dict[int, Any]:
    """The latest chunk of each of `series_ids`, where it holds fewer than `GROW` points."""
    ids = sorted(series_ids)
    tails = {}
    for i in range(0, len(ids), 10_000):  # within SQLite's limit of bound parameters
        rows = conn.execute(SMALL_TAILS, {"series_ids": ids[i : i + 10_000]})
        tails.update((row.series_id, row) for row in rows)
    return tails


def where(series_id: int, lo: int, hi: int):
    """Chunks of the series that hold steps in [lo, hi]."""
    return (chunks.c.series_id == series_id) & (chunks.c.first_step <= hi) & (chunks.c.last_step >= lo)


def overlapping(conn: Connection, series_id: int, lo: int, hi: int) -> list[Chunk]:
    query = (
        select(chunks.c.id, chunks.c.first_step, chunks.c.last_step, chunks.c.count, chunks.c.nonfinite)
        .where(where(series_id, lo, hi))
        .order_by(chunks.c.first_step, chunks.c.id)
    )
    return [Chunk(*row) for row in conn.execute(query)]


def decode(conn: Connection, ids: Sequence[int], lo: int, hi: int, sort: bool = True) -> Decoded:
    """The points in [lo, hi] of the chunks `ids`, sorted by (step, wall, seq)."""
    parts = []
    for i in range(0, len(ids), 1000):
        query = select(*(chunks.c[name] for name in COLUMNS)).where(chunks.c.id.in_(ids[i : i + 1000]))
        parts.extend(unpack(row) for row in conn.execute(query))
    if not parts:
        return empty()
    points = Decoded(*(np.concatenate(arrays) for arrays in zip(*parts)))
    points = points.take((points.steps >= lo) & (points.steps <= hi))
    return _sorted(points) if sort else points


def empty() -> Decoded:
    return Decoded(*(np.empty(0, dtype[1:]) for dtype in COLUMNS.values()))


def _split(found: list[Chunk], lo: int, hi: int) -> tuple[list[Chunk], list[int]]:
    """(chunks wholly inside [lo, hi], ids of those that straddle an edge)."""
    inside = [c for c in found if lo <= c.first_step and c.last_step <= hi]
    return inside, [c.id for c in found if c.first_step < lo or c.last_step > hi]


def count(conn: Connection, found: list[Chunk], lo: int, hi: int) -> int:
    """How many points of `found` lie in [lo, hi]: whole chunks by their count, the chunks
    that straddle an edge by decoding them."""
    inside, straddling = _split(found, lo, hi)
    return sum(c.count for c in inside) + len(decode(conn, straddling, lo, hi, sort=False))


def ends(conn: Connection, found: list[Chunk], lo: int, hi: int) -> Decoded:
    """The first and the last point in [lo, hi] (one point when they are the same): only
    the chunks that can hold them are decoded."""
    if not found:
        return empty()
    inside, straddling = _split(found, lo, hi)
    first = min((c.first_step for c in inside), default=None)
    last = max((c.last_step for c in inside), default=None)
    ids = straddling + [c.id for c in inside if c.first_step == first or c.last_step == last]
    points = decode(conn, ids, lo, hi)
    return points.take(np.unique([0, len(points) - 1])) if len(points) else points
