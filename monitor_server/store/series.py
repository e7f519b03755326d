"""Reading series: the list of a run's series, and one series at a chosen resolution.

A range that holds at most `max_points` points is answered at full resolution. A larger
one is answered from the finest summary level that splits it into at most
`2 * buckets` blocks, plus the raw points of the partial blocks at its two edges, so the
cost depends on `max_points`, not on the length of the run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Connection, select, text

from ..downsample import Points, bucket_count, bucket_extremes, concat, downsample, ordered_unique, thin_nonfinite
from ..errors import NotFound
from ..schemas import SeriesInfo
from ..tables import NONFINITE_WHERE, points, series
from .runs import get_run_row
from .summaries import LEVELS, read_blocks


def list_series(conn: Connection, run_id: str) -> list[SeriesInfo]:
    get_run_row(conn, run_id)
    rows = conn.execute(select(series).where(series.c.run_id == run_id).order_by(series.c.scope, series.c.name))
    nan = float("nan")
    return [
        SeriesInfo(
            scope=r.scope,
            name=r.name,
            count=r.count,
            first_step=r.first_step,
            last_step=r.last_step,
            last_value=nan if r.last_value is None else r.last_value,
            min=r.min_value,
            max=r.max_value,
        )
        for r in rows
    ]


def get_series_row(conn: Connection, run_id: str, scope: str, name: str) -> Any:
    get_run_row(conn, run_id)
    row = conn.execute(
        select(series).where(series.c.run_id == run_id, series.c.scope == scope, series.c.name == name)
    ).first()
    if row is None:
        raise NotFound(f"run {run_id!r} has no {scope} series {name!r}")
    return row


def _raw(conn: Connection, series_id: int, lo: int, hi: int, limit: int | None = None) -> Points:
    query = (
        select(points.c.step, points.c.value, points.c.wall_time)
        .where(points.c.series_id == series_id, points.c.step.between(lo, hi))
        .order_by(points.c.step, points.c.seq)
        .limit(limit)
    )
    return Points.of(conn.execute(query).all())


def _nonfinite(conn: Connection, series_id: int, lo: int, hi: int) -> Points:
    # SQLite would walk the primary key over the whole range unless told to use the
    # partial index, which holds only the non-finite points.
    hint = " INDEXED BY ix_points_nonfinite" if conn.dialect.name == "sqlite" else ""
    query = text(
        f"SELECT step, value, wall_time FROM points{hint} WHERE series_id = :sid AND step BETWEEN :lo AND :hi"
        f" AND {NONFINITE_WHERE.text} ORDER BY step, seq"
    )
    return Points.of(conn.execute(query, {"sid": series_id, "lo": lo, "hi": hi}).all())


def _last(conn: Connection, series_id: int, lo: int, hi: int) -> Points:
    query = (
        select(points.c.step, points.c.value, points.c.wall_time)
        .where(points.c.series_id == series_id, points.c.step.between(lo, hi))
        .order_by(points.c.step.desc(), points.c.seq.desc())
        .limit(1)
    )
    return Points.of(conn.execute(query).all())


def read_series(
    conn: Connection, run_id: str, scope: str, name: str, max_points: int, since: int | None, until: int | None
) -> tuple[Any, int, bool, Points]:
    """(series row, points in range, downsampled?, the points to draw)."""
    row = get_series_row(conn, run_id, scope, name)
    lo = row.first_step if since is None else max(since, row.first_step)
    hi = row.last_step if until is None else min(until, row.last_step)
    if row.count == 0 or lo > hi:
        return row, 0, False, Points.empty()
    head = _raw(conn, row.id, lo, hi, limit=max_points + 1)
    if len(head) <= max_points:
        return row, len(head), False, head
    n = bucket_count(max_points)
    level = _finest_level(lo, hi, n)
    if level is None:
        raw = _raw(conn, row.id, lo, hi)
        return row, len(raw), True, downsample(raw, lo, hi, max_points)
    count, picked = _from_summaries(conn, row.id, level, lo, hi, n)
    ends = concat(head.take(np.array([0])), _last(conn, row.id, lo, hi))
    nonfinite = thin_nonfinite(_nonfinite(conn, row.id, lo, hi), lo, hi, n)
    return row, count, True, ordered_unique(concat(ends, nonfinite, picked))


def _finest_level(lo: int, hi: int, n: int) -> int | None:
    """The finest level with at most 2n blocks in [lo, hi], or None when even the finest
    level has fewer than n blocks there: then raw points (at most ~16n) are cheaper and
    sharper than summaries."""
    if (hi - lo + 1) / LEVELS[0] < n:
        return None
    for level, size in enumerate(LEVELS):
        if hi // size - lo // size + 1 <= 2 * n:
            return level
    return len(LEVELS) - 1


def _from_summaries(conn: Connection, series_id: int, level: int, lo: int, hi: int, n: int) -> tuple[int, Points]:
    """Count and bucket extremes of [lo, hi] from whole blocks plus raw partial edges."""
    size = LEVELS[level]
    first_full = -(-lo // size)
    last_full = (hi + 1) // size - 1
    edges = []
    if first_full > last_full:
        edges.append(_raw(conn, series_id, lo, hi))
        blocks = []
    else:
        if lo < first_full * size:
            edges.append(_raw(conn, series_id, lo, first_full * size - 1))
        if (last_full + 1) * size <= hi:
            edges.append(_raw(conn, series_id, (last_full + 1) * size, hi))
        blocks = read_blocks(conn, series_id, level, first_full, last_full)
    edge = concat(*edges) if edges else Points.empty()
    lows = [(b.min_step, b.min_value, b.min_wall) for b in blocks if b.min_value is not None]
    highs = [(b.max_step, b.max_value, b.max_wall) for b in blocks if b.max_value is not None]
    count = sum(b.count for b in blocks) + len(edge)
    picked = bucket_extremes(concat(Points.of(lows), edge), concat(Points.of(highs), edge), lo, hi, n)
    return count, picked
