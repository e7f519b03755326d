"""A series' points, packed in chunks: one row per series per chunk, not per point.

A log post adds its points of each series to the series' latest chunk while that one is
small (`GROW`), so a training that posts a few records at a time still makes chunks of
hundreds of points, and starts new chunks of at most `MAX` points otherwise. The
rewrite of a small chunk costs at most `GROW` points a series a post. Points in a chunk
are sorted by (step, wall time, seq); chunks of one series may overlap in steps (a
resumed run logs a step again), so a read sorts what it decodes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import Connection, bindparam, func, select, update

from .downsample import group_starts
from .sql import Fetch, bulk_insert
from .tables import chunks, series

MAX = 4096
GROW = 256
COLUMNS = {"steps": "<i8", "seqs": "<i8", "epochs": "<i8", "walls": "<f8", "vals": "<f8"}
# How a chunk's arrays are laid out: `RAW`, as they are; `DELTAS` (what is written now),
# steps, seqs, epochs and the bit patterns of wall times as differences from the item
# before, modulo 2**64 (so exact whatever the values). Those are runs of small, mostly
# equal numbers, which PostgreSQL's lz4 packs to a fraction: a log post then writes 2.6
# times fewer bytes there, and its backend spends half the time storing them.
RAW, DELTAS = 0, 1
DIFFERENCED = ("steps", "seqs", "epochs", "walls")
ENCODINGS = {RAW: (), DELTAS: DIFFERENCED}
PACKED = ("encoding", *COLUMNS)  # the columns `unpack` reads
INSERTED = ("series_id", "first_step", "last_step", "count", "nonfinite", *PACKED)


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


def _differences(a: np.ndarray) -> np.ndarray:
    """Each item of `a`'s bit patterns minus the one before, modulo 2**64; the first keeps its own."""
    bits = a.view("<u8")
    out = np.empty_like(bits)
    out[:1] = bits[:1]
    np.subtract(bits[1:], bits[:-1], out=out[1:])
    return out


def _packer(p: Decoded) -> Callable[[int, int, int], tuple]:
    """`pack(series_id, a, b)`: the row (`INSERTED`) of a chunk of points `a:b` of `p`. The
    differences are taken once for all of `p` (per chunk, NumPy's per-call cost made a post
    of 10,000 new series ten times slower to pack); a chunk's first item is its own value.
    A post packs the grown tail of each series it logs to: this runs often on few points."""
    arrays = [np.ascontiguousarray(a, dtype) for a, dtype in zip(p, COLUMNS.values())]
    diffs = {name: _differences(a) for name, a in zip(COLUMNS, arrays) if name in DIFFERENCED}
    finite = np.isfinite(p.vals)
    nonfinite = None if finite.all() else np.concatenate(([0], np.cumsum(~finite)))

    def pack(series_id: int, a: int, b: int) -> tuple:
        return (
            series_id,
            int(p.steps[a]),
            int(p.steps[b - 1]),
            b - a,
            0 if nonfinite is None else int(nonfinite[b] - nonfinite[a]),
            DELTAS,
            *(
                array[a : a + 1].tobytes() + diffs[name][a + 1 : b].tobytes() if name in diffs else array[a:b].tobytes()
                for name, array in zip(COLUMNS, arrays)
            ),
        )

    return pack


def unpack(row: Any) -> Decoded:
    """A chunk row's points (the row needs the columns of `PACKED`, by name)."""
    differenced = ENCODINGS[row.encoding]
    arrays = []
    for name, dtype in COLUMNS.items():
        packed = getattr(row, name)
        if name in differenced:  # add.accumulate keeps uint64 and its wrap-around, 4 times faster than cumsum
            array = np.add.accumulate(np.frombuffer(packed, "<u8")).view(dtype)
        else:
            array = np.frombuffer(packed, dtype)
        arrays.append(array.astype(dtype[1:]))
    return Decoded(*arrays)


def append(conn: Connection, series_ids: np.ndarray, points: Decoded, tails: dict[int, Any]) -> None:
    """Add points sorted by (series, step, wall, seq) to their series' chunks: `tails` are
    the small latest chunks to grow (`small_tails`). Writes only: it may be pipelined."""
    starts = group_starts(series_ids)
    ends = np.append(starts[1:], len(series_ids))
    inserts: list[tuple] = []
    updates: list[dict[str, Any]] = []
    pack = _packer(points)
    for start, end in zip(starts.tolist(), ends.tolist()):
        sid = int(series_ids[start])
        tail = tails.get(sid)
        if tail is None:
            inserts.extend(pack(sid, a, min(a + MAX, end)) for a in range(start, end, MAX))
            continue
        old = unpack(tail)
        part = _sorted(Decoded(*(np.concatenate([a, b[start:end]]) for a, b in zip(old, points))))
        pack_part = _packer(part)
        rows = [pack_part(sid, a, min(a + MAX, len(part))) for a in range(0, len(part), MAX)]
        updates.append({"chunk_id": tail.id, **dict(zip(INSERTED, rows.pop(0)))})
        inserts.extend(rows)
    if updates:
        conn.execute(REWRITE, updates)
    bulk_insert(conn, chunks, inserts, INSERTED)


# Built once: every post runs them. A post's tails are read with the batch's other reads,
# before its series' ids are known: by run, scope and name, each a list (an index search
# on both databases, where a list of (run, scope, name) made SQLite scan every series).
# The newest chunk of a series is one probe of `ix_chunks_series_newest`, however many
# chunks the series has.
_OLDER = chunks.alias("older")
_NEWEST = select(func.max(_OLDER.c.id)).where(_OLDER.c.series_id == series.c.id).scalar_subquery()
SMALL_TAILS = (
    select(chunks)
    .select_from(series.join(chunks, chunks.c.id == _NEWEST))
    .where(
        series.c.run_id.in_(bindparam("run_ids", expanding=True)),
        series.c.scope.in_(bindparam("scopes", expanding=True)),
        series.c.name.in_(bindparam("names", expanding=True)),
        chunks.c.count < GROW,
    )
)
REWRITE = update(chunks).where(chunks.c.id == bindparam("chunk_id"))
NAMES_A_QUERY = 10_000  # within SQLite's limit of bound parameters


def small_tails(fetch: Fetch, run_ids: list[str], keys: Collection[tuple[str, str]]) -> list[list[Any]]:
    """Queue (see `sql.fetching`) the reads of the latest chunk of each series of `run_ids`
    named by one of `keys` (scope, name), where it holds fewer than `GROW` points;
    `tails_by_series` takes their rows. Runs that log different names may bring a few
    tails that no post grows."""
    scopes = sorted({scope for scope, _ in keys})
    names = sorted({name for _, name in keys})
    return [
        fetch(SMALL_TAILS, {"run_ids": run_ids, "scopes": scopes, "names": names[i : i + NAMES_A_QUERY]})
        for i in range(0, len(names), NAMES_A_QUERY)
    ]


def tails_by_series(found: list[list[Any]]) -> dict[int, Any]:
    return {row.series_id: row for rows in found for row in rows}


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
        query = select(*(chunks.c[name] for name in PACKED)).where(chunks.c.id.in_(ids[i : i + 1000]))
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
