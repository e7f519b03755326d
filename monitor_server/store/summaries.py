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
from sqlalchemy import Connection, select

from .downsample import group_starts
from .sql import bulk_params, bulk_rows
from .tables import summaries

# Level k covers blocks of 4**(k + 2) steps. Level 0 (16 steps) is no longer kept: ranges
# that fine are read from the chunks (up to 64 steps a bucket decode in a few ms), and it
# was three quarters of the rows a post merged.
LEVELS = {1: 64, 2: 256, 3: 1024, 4: 4096, 5: 16384, 6: 65536}


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


def block_columns(sid: np.ndarray, step: np.ndarray, wall: np.ndarray, value: np.ndarray) -> list[np.ndarray]:
    """Summary rows of every level, as columns in table order (the extremes' masked where a
    block has no finite value), for points sorted by (series, step). All levels are grouped
    in one pass: a post's few points per series would otherwise pay NumPy's per-call cost
    once a level."""
    sizes = np.array(list(LEVELS.values()))
    level = np.repeat(np.array(list(LEVELS)), len(step))
    block = (step[None, :] // sizes[:, None]).ravel()
    sid, step, wall, value = (np.tile(a, len(sizes)) for a in (sid, step, wall, value))
    starts = group_starts(level, sid, block)
    imin, imax, has_finite, counts = extremes(value, starts)
    columns = [sid[starts], level[starts], block[starts], counts]
    for at in (imin, imax):
        columns += [np.ma.masked_array(array[at], mask=~has_finite) for array in (value, step, wall)]
    return columns


COLUMNS = [c.name for c in summaries.columns]


def _merge_sql(rows: str) -> str:
    """New points (`rows`: see `sql.bulk_rows`) merge into a stored block: counts add up,
    an extreme moves only when the new one is strictly beyond it."""
    sets = ["count = summaries.count + excluded.count"]
    for kind, beyond in (("min", "<"), ("max", ">")):
        new, old = f"excluded.{kind}_value", f"summaries.{kind}_value"
        moves = f"{new} IS NOT NULL AND ({old} IS NULL OR {new} {beyond} {old})"
        sets += [
            f"{kind}_{c} = CASE WHEN {moves} THEN excluded.{kind}_{c} ELSE summaries.{kind}_{c} END"
            for c in ("value", "step", "wall")
        ]
    return (
        f"INSERT INTO summaries ({', '.join(COLUMNS)}) {rows} "
        f"ON CONFLICT (series_id, level, block) DO UPDATE SET {', '.join(sets)}"
    )


def merge_blocks(conn: Connection, columns: list[np.ndarray]) -> None:
    """Merge a post's block rows (`block_columns`) into the stored summaries, by driver
    SQL: this runs for every block a post touches, one statement for them all on PostgreSQL."""
    if len(columns[0]):
        sql = _merge_sql(bulk_rows(conn, summaries, COLUMNS))
        conn.exec_driver_sql(sql, bulk_params(conn, summaries, COLUMNS, columns))


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
