"""Chunks indexed by (series, id): a log post finds each series' newest chunk in one index
probe, not by visiting every chunk of the series (4,000 for a million streamed points).

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_chunks_series_newest", "chunks", ["series_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_chunks_series_newest", "chunks")
