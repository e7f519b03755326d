"""Points are stored in chunks of up to 4096 points a row, packed as little-endian arrays;
the ledger of received seqs keeps ranges of consecutive seqs instead of one row a seq.

Every point is copied, a series at a time in (step, wall time, seq) order, a chunk at a
time: the migration holds one batch of chunks in memory, however long the run. On SQLite
a NULL value in `points` was NaN; in a chunk it is NaN, as NaN and ±Infinity are on
PostgreSQL.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Iterator

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

CHUNK = 4096  # points a chunk row holds: `store.chunks.MAX` when this was written
BATCH_BYTES = 16 << 20  # chunk rows are written once this much is packed
BATCH_ROWS = 10_000  # points or received rows written by one executemany in downgrade
NONFINITE_WHERE = sa.text("value IS NULL OR abs(value) > 1.7976931348623157e308")


def upgrade() -> None:
    conn = op.get_bind()
    chunks = op.create_table(
        "chunks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("series_id", sa.Integer, nullable=False),
        sa.Column("first_step", sa.BigInteger, nullable=False),
        sa.Column("last_step", sa.BigInteger, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("nonfinite", sa.Integer, nullable=False),
        sa.Column("steps", sa.LargeBinary, nullable=False),
        sa.Column("seqs", sa.LargeBinary, nullable=False),
        sa.Column("epochs", sa.LargeBinary, nullable=False),
        sa.Column("walls", sa.LargeBinary, nullable=False),
        sa.Column("vals", sa.LargeBinary, nullable=False),
    )
    batch: list[dict] = []
    size = 0
    for series_id in _series_ids(conn):
        for rows in _points_of(conn, series_id):
            batch.append(_pack(series_id, rows))
            size += 40 * len(rows)
            if size >= BATCH_BYTES:
                conn.execute(chunks.insert(), batch)
                batch, size = [], 0
    if batch:
        conn.execute(chunks.insert(), batch)
    op.create_index("ix_chunks_series_steps", "chunks", ["series_id", "first_step", "last_step"])
    op.drop_index("ix_points_nonfinite", table_name="points")
    op.drop_table("points")

    # Gaps and islands: within a run, seq - rank is constant along consecutive seqs.
    _replace_received(
        [sa.Column("first_seq", sa.BigInteger, primary_key=True), sa.Column("last_seq", sa.BigInteger, nullable=False)],
        lambda new: conn.execute(
            sa.text(
                f"INSERT INTO {new} (run_id, first_seq, last_seq)"
                " SELECT run_id, min(seq), max(seq) FROM ("
                "  SELECT run_id, seq, seq - row_number() OVER (PARTITION BY run_id ORDER BY seq) AS island"
                "  FROM received) AS numbered"
                " GROUP BY run_id, island"
            )
        ),
    )


def downgrade() -> None:
    conn = op.get_bind()
    points = op.create_table(
        "points",
        sa.Column("series_id", sa.Integer, primary_key=True),
        sa.Column("step", sa.BigInteger, primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("epoch", sa.Integer),
        sa.Column("wall_time", sa.Double, nullable=False),
        sa.Column("value", sa.Double),
        sqlite_with_rowid=False,
    )
    insert = points.insert()
    sqlite = conn.dialect.name == "sqlite"
    rows: list[dict] = []
    chunk_ids = [r[0] for r in conn.execute(sa.text("SELECT id FROM chunks ORDER BY series_id, id"))]
    for chunk_id in chunk_ids:
        chunk = conn.execute(
            sa.text("SELECT series_id, steps, seqs, epochs, walls, vals FROM chunks WHERE id = :id"), {"id": chunk_id}
        ).one()
        steps, seqs, epochs = (np.frombuffer(chunk[i], "<i8").tolist() for i in (1, 2, 3))
        walls, vals = (np.frombuffer(chunk[i], "<f8").tolist() for i in (4, 5))
        for step, seq, epoch, wall, value in zip(steps, seqs, epochs, walls, vals):
            rows.append(
                {
                    "series_id": chunk[0],
                    "step": step,
                    "seq": seq,
                    "epoch": None if epoch < 0 else epoch,
                    "wall_time": wall,
                    "value": None if sqlite and value != value else value,
                }
            )
        if len(rows) >= BATCH_ROWS:
            conn.execute(insert, rows)
            rows = []
    if rows:
        conn.execute(insert, rows)
    op.create_index(
        "ix_points_nonfinite",
        "points",
        ["series_id", "step"],
        sqlite_where=NONFINITE_WHERE,
        postgresql_where=NONFINITE_WHERE,
    )
    op.drop_index("ix_chunks_series_steps", table_name="chunks")
    op.drop_table("chunks")

    def fill(new: str) -> None:
        insert = sa.text(f"INSERT INTO {new} (run_id, seq) VALUES (:run_id, :seq)")
        ranges = conn.execute(sa.text("SELECT run_id, first_seq, last_seq FROM received ORDER BY run_id, first_seq"))
        for run_id, first, last in ranges.all():
            for start in range(first, last + 1, BATCH_ROWS):
                stop = min(start + BATCH_ROWS, last + 1)
                conn.execute(insert, [{"run_id": run_id, "seq": seq} for seq in range(start, stop)])

    _replace_received([sa.Column("seq", sa.BigInteger, primary_key=True)], fill)


def _series_ids(conn: sa.Connection) -> Iterator[int]:
    """Every series id that has points, orphans included: one index seek each."""
    query = sa.text("SELECT series_id FROM points WHERE series_id > :after ORDER BY series_id LIMIT 1")
    after = -(2**31)
    while (series_id := conn.execute(query, {"after": after}).scalar()) is not None:
        yield series_id
        after = series_id


def _points_of(conn: sa.Connection, series_id: int) -> Iterator[list]:
    """The series' points in chunk order, `CHUNK` rows at a time, streamed (a server-side
    cursor on PostgreSQL)."""
    query = sa.text(
        "SELECT step, seq, COALESCE(epoch, -1), wall_time, value FROM points"
        " WHERE series_id = :sid ORDER BY step, wall_time, seq"
    )
    options = {"stream_results": True, "yield_per": CHUNK}  # this statement's, not the connection's
    result = conn.execute(query, {"sid": series_id}, execution_options=options)
    yield from result.partitions(CHUNK)


def _pack(series_id: int, rows: list) -> dict:
    steps, seqs, epochs, walls, values = zip(*rows)
    step = np.array(steps, "<i8")
    vals = np.array(values, np.float64)  # NULL (NaN on SQLite) comes in as None, read as NaN
    vals = np.where(np.isnan(vals), np.nan, vals).astype("<f8")
    return {
        "series_id": series_id,
        "first_step": int(step.min()),
        "last_step": int(step.max()),
        "count": len(rows),
        "nonfinite": int(np.count_nonzero(~np.isfinite(vals))),
        "steps": step.tobytes(),
        "seqs": np.array(seqs, "<i8").tobytes(),
        "epochs": np.array(epochs, "<i8").tobytes(),
        "walls": np.array(walls, "<f8").tobytes(),
        "vals": vals.tobytes(),
    }


def _replace_received(columns: list[sa.Column], fill) -> None:
    """Build `received` anew with `run_id` and `columns` under a temporary name, `fill`
    it from the old one, then drop the old and take its name (and, on PostgreSQL, the
    name of its primary key)."""
    op.create_table(
        "received_new", sa.Column("run_id", sa.String(64), primary_key=True), *columns, sqlite_with_rowid=False
    )
    fill("received_new")
    op.drop_table("received")
    op.rename_table("received_new", "received")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE received RENAME CONSTRAINT received_new_pkey TO received_pkey")
