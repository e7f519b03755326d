"""Reading series: the list of a run's series, and one series at a chosen resolution.

A range that holds at most `max_points` points is answered at full resolution from the
chunks it overlaps. A larger one is answered from the finest summary level that splits
it into at most `2 * buckets` blocks, plus the points of the partial blocks at its two
edges, so the cost depends on `max_points`, not on the length of the run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Connection, select

from ..domain.errors import NotFound
from ..domain.schemas import SeriesInfo
from . import chunks as chunk_store
from .downsample import Points, bucket_count, bucket_extremes, concat, group_starts, ordered_unique
from .runs import get_run_row
from .summaries import LEVELS, extremes, read_blocks
from .tables import series


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


def _points(p: chunk_store.Decoded) -> Points:
    return Points(p.steps, p.vals, p.walls)


def _per_step(p: chunk_store.Decoded) -> tuple[Points, Points]:
    """Each step's lowest and highest finite point (at the step's first wall time): one
    candidate a step however many points share it."""
    if not len(p):
        return Points.empty(), Points.empty()
    starts = group_starts(p.steps)
    imin, imax, has_finite, _ = extremes(p.vals, starts)
    steps, walls = p.steps[starts][has_finite], np.minimum.reduceat(p.walls, starts)[has_finite]
    return Points(steps, p.vals[imin][has_finite], walls), Points(steps, p.vals[imax][has_finite], walls)


def _nonfinite(conn: Connection, found: list[chunk_store.Chunk], lo: int, hi: int, n: int) -> Points:
    """Every NaN and ±Infinity point of [lo, hi] when there are at most `n`; otherwise, in
    each of `n` step buckets, the first point of each kind there: a bounded answer that
    still marks every bucket holding one. Only chunks that hold one are decoded."""
    p = chunk_store.decode(conn, [c.id for c in found if c.nonfinite], lo, hi)
    p = p.take(~np.isfinite(p.vals))
    if len(p) <= n:
        return _points(p)
    kind = np.where(np.isnan(p.vals), 0, np.where(p.vals > 0, 1, 2))
    group = (p.steps - lo) // -(-(hi - lo + 1) // n) * 3 + kind
    order = np.lexsort((p.steps, group))
    starts = group_starts(group[order])
    steps = p.steps[order][starts]
    walls = np.minimum.reduceat(p.walls[order], starts)
    values = np.array([np.nan, np.inf, -np.inf])[kind[order][starts]]
    return Points(steps, values, walls)


def read_series(
    conn: Connection, run_id: str, scope: str, name: str, max_points: int, since: int | None, until: int | None
) -> tuple[Any, int, bool, Points]:
    """(series row, points in range, downsampled?, the points to draw). What is decoded is
    bounded by `max_points`, the summary blocks' edges or the steps in range, never by the
    number of points."""
    row = get_series_row(conn, run_id, scope, name)
    lo = row.first_step if since is None else max(since, row.first_step)
    hi = row.last_step if until is None else min(until, row.last_step)
    if row.count == 0 or lo > hi:
        return row, 0, False, Points.empty()
    found = chunk_store.overlapping(conn, row.id, lo, hi)
    if sum(c.count for c in found) <= max_points:  # few enough whatever lies outside: decode once
        points = chunk_store.decode(conn, [c.id for c in found], lo, hi)
        return row, len(points), False, _points(points)
    count = chunk_store.count(conn, found, lo, hi)
    if count <= max_points:
        return row, count, False, _points(chunk_store.decode(conn, [c.id for c in found], lo, hi))
    n = bucket_count(max_points)
    level = _finest_level(lo, hi, n)
    if level is None:
        lows, highs = _per_step(chunk_store.decode(conn, [c.id for c in found], lo, hi))
        picked = bucket_extremes(lows, highs, lo, hi, n)
    else:
        picked = _from_summaries(conn, row.id, found, level, lo, hi, n)
    ends = _points(chunk_store.ends(conn, found, lo, hi))
    return row, count, True, ordered_unique(concat(ends, _nonfinite(conn, found, lo, hi, n), picked))


def _finest_level(lo: int, hi: int, n: int) -> int | None:
    """The finest level with at most 2n blocks in [lo, hi], or None when even the finest
    level has fewer than n blocks there: then the steps themselves (fewer than 64n) are
    cheaper and sharper than summaries."""
    if (hi - lo + 1) / min(LEVELS.values()) < n:
        return None
    for level, size in LEVELS.items():
        if hi // size - lo // size + 1 <= 2 * n:
            return level
    return max(LEVELS)


def _from_summaries(
    conn: Connection, series_id: int, found: list[chunk_store.Chunk], level: int, lo: int, hi: int, n: int
) -> Points:
    """Bucket extremes of [lo, hi] from whole blocks plus the raw partial edges."""
    size = LEVELS[level]
    first_full = -(-lo // size)
    last_full = (hi + 1) // size - 1
    spans = []
    if first_full > last_full:
        spans.append((lo, hi))
        blocks = []
    else:
        if lo < first_full * size:
            spans.append((lo, first_full * size - 1))
        if (last_full + 1) * size <= hi:
            spans.append(((last_full + 1) * size, hi))
        blocks = read_blocks(conn, series_id, level, first_full, last_full)
    lows = [Points.of([(b.min_step, b.min_value, b.min_wall) for b in blocks if b.min_value is not None])]
    highs = [Points.of([(b.max_step, b.max_value, b.max_wall) for b in blocks if b.max_value is not None])]
    for start, end in spans:  # the partial blocks at the edges, a step at a time
        ids = [c.id for c in found if c.first_step <= end and c.last_step >= start]
        edge_lows, edge_highs = _per_step(chunk_store.decode(conn, ids, start, end))
        lows.append(edge_lows)
        highs.append(edge_highs)
    return bucket_extremes(concat(*lows), concat(*highs), lo, hi, n)
