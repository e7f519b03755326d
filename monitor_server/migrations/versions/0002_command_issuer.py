"""Commands record the role of the token that issued them.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("commands", sa.Column("issued_by", sa.String(16)))


def downgrade() -> None:
    op.drop_column("commands", "issued_by")
