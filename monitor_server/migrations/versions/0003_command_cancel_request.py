"""Commands remember when a cancel was asked after the training had them.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("commands", sa.Column("cancel_requested_at", sa.Double))


def downgrade() -> None:
    op.drop_column("commands", "cancel_requested_at")
