"""Chunks compressed with lz4 on PostgreSQL; summaries without their 16-step level.

A chunk's arrays are TOASTed; PostgreSQL's default compression (pglz) took most of the time
of a log post there, lz4 compresses about as well at a fraction of the cost. Chunks stored
before stay as they are (both read back alike). A PostgreSQL built without lz4 keeps pglz.

Level 0 of the summaries (blocks of 16 steps) was three quarters of the rows each post
merged; ranges that fine are now read from the chunks, so its rows go. A downgrade
computes them again from the chunks.

Revision ID: 0007
Revises: 0006
"""

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BLOBS = ("steps", "seqs", "epochs", "walls", "vals")
SUMMARY_COLUMNS = "series_id, level, block, count, min_value, min_step, min_wall, max_value, max_step, max_wall"


def _compress(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or bind.dialect.server_version_info < (14,):
        return
    try:
        with bind.begin_nested():
            for column in BLOBS:
                op.execute(f"ALTER TABLE chunks ALTER COLUMN {column} SET COMPRESSION {method}")
    except sa.exc.DBAPIError:  # built without lz4
        pass


def upgrade() -> None:
    _compress("lz4")
    op.execute("DELETE FROM summaries WHERE level = 0")


def _level_zero(series_id: int, chunks: list) -> list[tuple]:
    """The 16-step block rows of one series, from its chunks' packed arrays: per block, the
    count and the first lowest and highest finite point in (step, wall, seq) order."""
    steps, seqs, walls, vals = (
        np.concatenate([np.frombuffer(getattr(c, name), "<" + kind) for c in chunks])
        for name, kind in (("steps", "i8"), ("seqs", "i8"), ("walls", "f8"), ("vals", "f8"))
    )
    order = np.lexsort((seqs, walls, steps))
    steps, walls, vals = steps[order], walls[order], vals[order]
    blocks = steps // 16
    starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
    counts = np.diff(np.append(starts, len(steps)))
    finite = np.isfinite(vals)
    has_finite = np.add.reduceat(finite, starts) > 0
    columns = [[series_id] * len(starts), [0] * len(starts), blocks[starts].tolist(), counts.tolist()]
    for fill, reduce in ((np.inf, np.minimum), (-np.inf, np.maximum)):
        bounded = np.where(finite, vals, fill)
        hits = np.flatnonzero(bounded == np.repeat(reduce.reduceat(bounded, starts), counts))
        at = hits[np.searchsorted(hits, starts)]
        for array in (vals, steps, walls):
            column = array[at].astype(object)
            column[~has_finite] = None
            columns.append(column.tolist())
    return list(zip(*columns))


def downgrade() -> None:
    bind = op.get_bind()
    mark = "%s" if bind.dialect.name == "postgresql" else "?"
    insert = f"INSERT INTO summaries ({SUMMARY_COLUMNS}) VALUES ({', '.join([mark] * 10)})"
    for (series_id,) in bind.exec_driver_sql("SELECT DISTINCT series_id FROM chunks").all():
        chunks = bind.exec_driver_sql(
            f"SELECT steps, seqs, walls, vals FROM chunks WHERE series_id = {int(series_id)} ORDER BY id"
        ).all()
        rows = _level_zero(series_id, chunks)
        if rows:
            bind.exec_driver_sql(insert, rows)
    _compress("default")
