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

from ..downsample import Points, bucket_count, bucket_extremes, concat, ordered_unique
from ..errors import NotFound
from ..schemas import SeriesInfo
from ..tables import FINITE, NONFINITE_WHERE, points, series
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


def _raw(conn: Connection, series_id: int, lo: int, hi: int, limit: int) -> Points:
    query = (
        select(points.c.step, points.c.value, points.c.wall_time)
        .where(points.c.series_id == series_id, points.c.step.between(lo, hi))
        .order_by(points.c.step, points.c.seq)
        .limit(limit)
    )
    return Points.of(conn.execute(query).all())


def _per_step(conn: Connection, series_id: int, lo: int, hi: int) -> tuple[int, Points, Points]:
    """(points in [lo, hi], each step's lowest finite point, each step's highest): one row
    a step however many points share it, so the read is bounded by the steps."""
    finite = f"CASE WHEN {FINITE} THEN value END"
    query = text(
        f"SELECT step, min({finite}), max({finite}), min(wall_time), count(*) FROM points"
        " WHERE series_id = :sid AND step BETWEEN :lo AND :hi GROUP BY step ORDER BY step"
    )
    rows = conn.execute(query, {"sid": series_id, "lo": lo, "hi": hi}).all()
    lows = Points.of([(r[0], r[1], r[3]) for r in rows if r[1] is not None])
    highs = Points.of([(r[0], r[2], r[3]) for r in rows if r[2] is not None])
    return sum(r[4] for r in rows), lows, highs


def _nonfinite(conn: Connection, series_id: int, lo: int, hi: int, n: int) -> Points:
    """Every NaN and ±Infinity point of [lo, hi] when there are at most `n`; otherwise, in
    each of `n` step buckets, the first point of each kind there: a bounded answer that
    still marks every bucket holding one."""
    # SQLite would walk the primary key over the whole range unless told to use the
    # partial index, which holds only the non-finite points.
    hint = " INDEXED BY ix_points_nonfinite" if conn.dialect.name == "sqlite" else ""
    where = f"FROM points{hint} WHERE series_id = :sid AND step BETWEEN :lo AND :hi AND {NONFINITE_WHERE.text}"
    bind = {"sid": series_id, "lo": lo, "hi": hi}
    few = conn.execute(text(f"SELECT step, value, wall_time {where} ORDER BY step, seq LIMIT :n"), {**bind, "n": n + 1})
    rows = few.all()
    if len(rows) <= n:
        return Points.of(rows)
    kind = "CASE WHEN value IS NULL THEN 0 WHEN value > 0 THEN 1 ELSE 2 END"
    if conn.dialect.name == "postgresql":  # NaN is a value there, greater than any other
        kind = "CASE WHEN value = 'NaN'::float8 THEN 0 WHEN value > 0 THEN 1 ELSE 2 END"
    width = -(-(hi - lo + 1) // n)
    grouped = text(
        f"SELECT min(step), min(wall_time), {kind} AS kind {where} GROUP BY (step - :lo) / :width, kind ORDER BY 1"
    )
    value = (float("nan"), float("inf"), float("-inf"))
    return Points.of([(step, value[k], wall) for step, wall, k in conn.execute(grouped, {**bind, "width": width})])


def _last(conn: Connection, series_id: int, lo: int, hi: int) -> Points:
    query = (
        select(points.c.step, points.c.value, points.c.wall_time)
        .where(points.c.series_id == series_id, points.c.step.between(lo, hi))
        .order_by(points.c.step.desc(), points.c.wall_time.desc(), points.c.seq.desc())
        .limit(1)
    )
    return Points.of(conn.execute(query).all())


def read_series(
    conn: Connection, run_id: str, scope: str, name: str, max_points: int, since: int | None, until: int | None
) -> tuple[Any, int, bool, Points]:
    """(series row, points in range, downsampled?, the points to draw). Every query is
    bounded by `max_points`, the summary blocks or the steps in range, never by the
    number of points."""
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
        count, lows, highs = _per_step(conn, row.id, lo, hi)
        picked = bucket_extremes(lows, highs, lo, hi, n)
    else:
        count, picked = _from_summaries(conn, row.id, level, lo, hi, n)
    ends = concat(head.take(np.array([0])), _last(conn, row.id, lo, hi))
    return row, count, True, ordered_unique(concat(ends, _nonfinite(conn, row.id, lo, hi, n), picked))


def _finest_level(lo: int, hi: int, n: int) -> int | None:
    """The finest level with at most 2n blocks in [lo, hi], or None when even the finest
    level has fewer than n blocks there: then the steps themselves (fewer than 16n) are
    cheaper and sharper than summaries."""
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
    count = sum(b.count for b in blocks)
    for start, end in spans:  # the partial blocks at the edges, a step at a time
        edge_count, edge_lows, edge_highs = _per_step(conn, series_id, start, end)
        count += edge_count
        lows.append(edge_lows)
        highs.append(edge_highs)
    return count, bucket_extremes(concat(*lows), concat(*highs), lo, hi, n)
