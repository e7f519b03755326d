"""Initial schema: runs, series, points, summaries, received, commands.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
NONFINITE_WHERE = sa.text("value IS NULL OR abs(value) > 1.7976931348623157e308")


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("config", JSONType, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("last_seen", sa.Double, nullable=False),
    )
    op.create_index("ix_runs_project_created", "runs", ["project", "created_at"])
    op.create_index("ix_runs_created", "runs", ["created_at"])
    op.create_table(
        "series",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("first_step", sa.BigInteger, nullable=False),
        sa.Column("last_step", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("last_value", sa.Double),
        sa.Column("min_value", sa.Double),
        sa.Column("max_value", sa.Double),
        sa.UniqueConstraint("run_id", "scope", "name", name="uq_series_run_scope_name"),
    )
    op.create_table(
        "points",
        sa.Column("series_id", sa.Integer, primary_key=True),
        sa.Column("step", sa.BigInteger, primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("epoch", sa.Integer),
        sa.Column("wall_time", sa.Double, nullable=False),
        sa.Column("value", sa.Double),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_points_nonfinite",
        "points",
        ["series_id", "step"],
        sqlite_where=NONFINITE_WHERE,
        postgresql_where=NONFINITE_WHERE,
    )
    op.create_table(
        "summaries",
        sa.Column("series_id", sa.Integer, primary_key=True),
        sa.Column("level", sa.SmallInteger, primary_key=True),
        sa.Column("block", sa.BigInteger, primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("min_value", sa.Double),
        sa.Column("min_step", sa.BigInteger),
        sa.Column("min_wall", sa.Double),
        sa.Column("max_value", sa.Double),
        sa.Column("max_step", sa.BigInteger),
        sa.Column("max_wall", sa.Double),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "received",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "commands",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("args", JSONType, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("delivered_at", sa.Double),
        sa.Column("done_at", sa.Double),
        sa.Column("message", sa.Text),
        sa.Column("step", sa.BigInteger),
    )
    op.create_index("ix_commands_run_status", "commands", ["run_id", "status"])


def downgrade() -> None:
    for name in ("commands", "received", "summaries", "points", "series", "runs"):
        op.drop_table(name)
