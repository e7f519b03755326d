"""Commands remember when a cancel was asked after the training had them; run configs are
kept as plain JSON on PostgreSQL (JSONB cannot hold a NUL character in text); a series
knows the wall time of its last point, which decides between points of one step.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("commands", sa.Column("cancel_requested_at", sa.Double))
    op.add_column("series", sa.Column("last_wall", sa.Double))
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("runs", "config", type_=sa.JSON(), postgresql_using="config::json")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("runs", "config", type_=JSONB(), postgresql_using="config::jsonb")
    op.drop_column("series", "last_wall")
    op.drop_column("commands", "cancel_requested_at")
