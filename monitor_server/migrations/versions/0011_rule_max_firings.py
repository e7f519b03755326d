"""A bound on a rule's firings for each run (`max_firings`), and the count of those refused
past it: a flapping series no longer issues a command at every flip.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("rules", sa.Column("max_firings", sa.Integer(), nullable=False, server_default="100"))
    op.add_column("rule_firings", sa.Column("suppressed", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.execute("DELETE FROM rule_firings WHERE suppressed > 0")  # the older layout has no such rows
    # Dropped in place (SQLite >= 3.35), not by batch mode's copy of the table: with foreign
    # keys on, dropping the old `rules` would delete every rule's states and firings.
    op.drop_column("rule_firings", "suppressed")
    op.drop_column("rules", "max_firings")
