"""Chunks record how their arrays are laid out: those written from now on keep steps, seqs,
epochs and wall times as differences (see `store.chunks.ENCODINGS`), which PostgreSQL's lz4
packs to a fraction. Chunks stored before stay as they are, read alike. A downgrade writes
the differenced ones out again as plain arrays.

Revision ID: 0009
Revises: 0008
"""

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

DIFFERENCED = ("steps", "seqs", "epochs", "walls")


def upgrade() -> None:
    op.add_column("chunks", sa.Column("encoding", sa.SmallInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    bind = op.get_bind()
    chunks = sa.table("chunks", sa.column("id"), sa.column("encoding"), *(sa.column(c) for c in DIFFERENCED))
    rewrite = chunks.update().where(chunks.c.id == sa.bindparam("chunk_id"))
    ids = bind.execute(sa.select(chunks.c.id).where(chunks.c.encoding == 1)).scalars().all()
    for i in range(0, len(ids), 500):
        rows = bind.execute(sa.select(chunks).where(chunks.c.id.in_(ids[i : i + 500]))).all()
        plain = [
            {
                "chunk_id": row.id,
                **{c: np.cumsum(np.frombuffer(getattr(row, c), "<u8"), dtype=np.uint64).tobytes() for c in DIFFERENCED},
            }
            for row in rows
        ]
        bind.execute(rewrite, plain)
    with op.batch_alter_table("chunks") as batch:
        batch.drop_column("encoding")
