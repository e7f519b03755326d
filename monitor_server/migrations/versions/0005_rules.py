"""Rules that act: rules, what each remembers of a run, and their firings.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rules",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project", sa.String(200)),
        sa.Column("run_id", sa.String(64)),
        sa.Column("when", sa.JSON, nullable=False),
        sa.Column("then", sa.JSON),
        sa.Column("notify", sa.Boolean, nullable=False),
        sa.Column("once_per_run", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("notified_at", sa.Double),
        sa.Column("notify_error", sa.Text),
        sa.Column("notify_error_at", sa.Double),
    )
    op.create_table(
        "rule_states",
        sa.Column("rule_id", sa.Integer, sa.ForeignKey("rules.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("state", sa.JSON, nullable=False),
    )
    op.create_table(
        "rule_firings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("rule_id", sa.Integer, sa.ForeignKey("rules.id", ondelete="CASCADE"), nullable=False),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(32), nullable=False),
        sa.Column("step", sa.BigInteger, nullable=False),
        sa.Column("value", sa.Double),
        sa.Column("command_id", sa.Integer, sa.ForeignKey("commands.id", ondelete="SET NULL")),
        sa.Column("message", sa.Text),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.UniqueConstraint("rule_id", "run_id", "key", name="uq_rule_firings_once"),
    )
    op.create_index("ix_rule_firings_run", "rule_firings", ["run_id", "id"])


def downgrade() -> None:
    op.drop_table("rule_firings")
    op.drop_table("rule_states")
    op.drop_table("rules")
