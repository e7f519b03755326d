"""Chunks compressed with lz4 on PostgreSQL.

A chunk's arrays are TOASTed; PostgreSQL's default compression (pglz) took most of the time
of a log post there, lz4 compresses as well at a fraction of the cost. Chunks stored
before stay as they are (both read back alike). SQLite is untouched, and so is a
PostgreSQL built without lz4, which keeps pglz.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BLOBS = ("steps", "seqs", "epochs", "walls", "vals")


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


def downgrade() -> None:
    _compress("default")
