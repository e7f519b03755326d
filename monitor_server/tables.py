"""The schema, in SQLAlchemy Core. Migrations in `migrations/` create exactly this.

A metric value is float64 and may be non-finite. PostgreSQL stores NaN and ±Infinity as
they are; SQLite stores ±Infinity but turns NaN into NULL, so NULL in `value` reads back
as NaN. Points carry no foreign key: they are deleted with their series by the store, and
the ingest path saves a lookup per row.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

JSONType = JSON().with_variant(JSONB(), "postgresql")

# Rows whose value is NaN or ±Infinity: NULL on SQLite; on PostgreSQL NaN compares greater
# than every number, so abs() > the largest float catches NaN and both infinities.
NONFINITE_WHERE = text("(value IS NULL OR abs(value) > 1.7976931348623157e308)")
FINITE = "value IS NOT NULL AND abs(value) <= 1.7976931348623157e308"

runs = Table(
    "runs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("project", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    # Plain JSON, not JSONB, on PostgreSQL: a config is kept as sent, NUL characters included.
    Column("config", JSON, nullable=False),
    Column("controls", JSON),  # what the training says can be steered: params, actions, checkpoint folder
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("last_seen", Double, nullable=False),
    Index("ix_runs_project_created", "project", "created_at"),
    Index("ix_runs_created", "created_at"),
)

series = Table(
    "series",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("scope", String(8), nullable=False),
    Column("name", String(200), nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("first_step", BigInteger, nullable=False),
    Column("last_step", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_wall", Double),  # with last_step: which point is the last (null: older rows)
    Column("last_value", Double),
    Column("min_value", Double),
    Column("max_value", Double),
    UniqueConstraint("run_id", "scope", "name", name="uq_series_run_scope_name"),
)

points = Table(
    "points",
    metadata,
    Column("series_id", Integer, primary_key=True),
    Column("step", BigInteger, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("epoch", Integer),
    Column("wall_time", Double, nullable=False),
    Column("value", Double),
    Index(
        "ix_points_nonfinite",
        "series_id",
        "step",
        sqlite_where=NONFINITE_WHERE,
        postgresql_where=NONFINITE_WHERE,
    ),
    sqlite_with_rowid=False,
)

# Min/max of each block of 4**k steps, kept at ingest so that a zoomed-out chart of a long
# series reads thousands of rows instead of millions.
summaries = Table(
    "summaries",
    metadata,
    Column("series_id", Integer, primary_key=True),
    Column("level", SmallInteger, primary_key=True),
    Column("block", BigInteger, primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("min_value", Double),
    Column("min_step", BigInteger),
    Column("min_wall", Double),
    Column("max_value", Double),
    Column("max_step", BigInteger),
    Column("max_wall", Double),
    sqlite_with_rowid=False,
)

# Every (run, seq) ever stored: the ledger that makes a retried batch count as duplicates.
received = Table(
    "received",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    sqlite_with_rowid=False,
)

commands = Table(
    "commands",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("type", String(32), nullable=False),
    Column("args", JSONType, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("delivered_at", Double),
    Column("done_at", Double),
    Column("message", Text),
    Column("step", BigInteger),
    Column("issued_by", String(16)),  # role of the token that issued it: admin or anonymous
    # A cancel asked after delivery: the training withdraws the command if it has not applied it.
    Column("cancel_requested_at", Double),
    Column("at", JSON),  # {"step": N} or {"epoch": N}: applied exactly there
    Index("ix_commands_run_status", "run_id", "status"),
)

# A rule watches one series of every run in its scope (a run, a project, or all runs).
rules = Table(
    "rules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project", String(200)),
    Column("run_id", String(64)),  # no foreign key: deleting the run deletes its rules
    Column("when", JSON, nullable=False),  # {"scope", "name", "op", "value"?, "patience"?, "mode"?}
    Column("then", JSON),  # a command of the vocabulary, issued when it fires
    Column("notify", Boolean, nullable=False),
    Column("once_per_run", Boolean, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("notified_at", Double),  # the last webhook that went through
    Column("notify_error", Text),  # the last webhook that did not, when it was the latest
    Column("notify_error_at", Double),
)

# What a rule remembers of a run between log posts: a few numbers, read once a post.
rule_states = Table(
    "rule_states",
    metadata,
    Column("rule_id", Integer, ForeignKey("rules.id", ondelete="CASCADE"), primary_key=True),
    Column("run_id", String(64), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("state", JSON, nullable=False),
)

# Each time a rule fired for a run. The unique key makes a firing happen once, whichever
# server process stores the point: "run" for a rule that fires once a run, else the step.
rule_firings = Table(
    "rule_firings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule_id", Integer, ForeignKey("rules.id", ondelete="CASCADE"), nullable=False),
    Column("run_id", String(64), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(32), nullable=False),
    Column("step", BigInteger, nullable=False),
    Column("value", Double),  # NULL: NaN on SQLite, as in points
    Column("command_id", Integer, ForeignKey("commands.id", ondelete="SET NULL")),
    Column("message", Text),
    Column("created_at", Double, nullable=False),
    UniqueConstraint("rule_id", "run_id", "key", name="uq_rule_firings_once"),
    Index("ix_rule_firings_run", "run_id", "id"),
)
