"""Steering v2: a command may be scheduled (`at`), and a run reports what can be steered
(`controls`).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("commands", sa.Column("at", sa.JSON))
    op.add_column("runs", sa.Column("controls", sa.JSON))


def downgrade() -> None:
    op.drop_column("runs", "controls")
    op.drop_column("commands", "at")
