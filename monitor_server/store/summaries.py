"""Per-block min/max summaries of each series, kept at ingest.

Level k covers blocks of `LEVELS[k]` consecutive steps. A block row holds how many points
fell in it and where its smallest and largest finite values are, so a chart of a million
points needs the ~2,000 rows of one level instead of every point. New points merge into a
block in the database (`ON CONFLICT DO UPDATE` with CASE), so concurrent runs never read
and rewrite each other's blocks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Connection, case, select

from ..downsample import group_starts
from ..tables import summaries
from .sql import dialect_insert

LEVELS = (16, 64, 256, 1024, 4096, 16384, 65536)


def extremes(values: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per group: index of the min and max finite value, and whether the group has one.

    Returns (min_index, max_index, has_finite, counts).
    """
    finite = np.isfinite(values)
    lows = np.where(finite, values, np.inf)
    highs = np.where(finite, values, -np.inf)
    counts = np.diff(np.append(starts, len(values)))
    gmin = np.minimum.reduceat(lows, starts)
    gmax = np.maximum.reduceat(highs, starts)
    has_finite = np.add.reduceat(finite, starts) > 0
    # The first position in each group that reaches the group's extreme.
    min_hits = np.flatnonzero(lows == np.repeat(gmin, counts))
    max_hits = np.flatnonzero(highs == np.repeat(gmax, counts))
    return min_hits[np.searchsorted(min_hits, starts)], max_hits[np.searchsorted(max_hits, starts)], has_finite, counts


def block_rows(sid: np.ndarray, step: np.ndarray, wall: np.ndarray, value: np.ndarray) -> list[dict[str, Any]]:
    """Summary rows of every level for points sorted by (series, step)."""
    rows: list[dict[str, Any]] = []
    for level, size in enumerate(LEVELS):
        block = step // size
        starts = group_starts(sid, block)
        imin, imax, has_finite, counts = extremes(value, starts)
        for g, start in enumerate(starts.tolist()):
            lo, hi, ok = int(imin[g]), int(imax[g]), bool(has_finite[g])
            rows.append(
                {
                    "series_id": int(sid[start]),
                    "level": level,
                    "block": int(block[start]),
                    "count": int(counts[g]),
                    "min_value": float(value[lo]) if ok else None,
                    "min_step": int(step[lo]) if ok else None,
                    "min_wall": float(wall[lo]) if ok else None,
                    "max_value": float(value[hi]) if ok else None,
                    "max_step": int(step[hi]) if ok else None,
                    "max_wall": float(wall[hi]) if ok else None,
                }
            )
    return rows


def _merge_statement(conn: Connection):
    stmt = dialect_insert(conn, summaries)
    new, old = stmt.excluded, summaries.c
    lower = (new.min_value.is_not(None)) & (old.min_value.is_(None) | (new.min_value < old.min_value))
    higher = (new.max_value.is_not(None)) & (old.max_value.is_(None) | (new.max_value > old.max_value))
    return stmt.on_conflict_do_update(
        index_elements=["series_id", "level", "block"],
        set_={
            "count": old.count + new["count"],
            "min_value": case((lower, new.min_value), else_=old.min_value),
            "min_step": case((lower, new.min_step), else_=old.min_step),
            "min_wall": case((lower, new.min_wall), else_=old.min_wall),
            "max_value": case((higher, new.max_value), else_=old.max_value),
            "max_step": case((higher, new.max_step), else_=old.max_step),
            "max_wall": case((higher, new.max_wall), else_=old.max_wall),
        },
    )


def merge_blocks(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(_merge_statement(conn), rows)


def read_blocks(conn: Connection, series_id: int, level: int, first: int, last: int) -> list[Any]:
    """Summary rows of blocks `first..last` at `level`, in step order."""
    query = (
        select(summaries)
        .where(
            summaries.c.series_id == series_id,
            summaries.c.level == level,
            summaries.c.block.between(first, last),
        )
        .order_by(summaries.c.block)
    )
    return conn.execute(query).all()
