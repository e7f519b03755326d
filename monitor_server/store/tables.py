"""The schema, in SQLAlchemy Core. Migrations in `migrations/` create exactly this.

A metric value is float64 and may be non-finite. In points (packed in `chunks`) it is
kept exactly; in the few float columns elsewhere PostgreSQL stores NaN and ±Infinity as
they are, and SQLite stores ±Infinity but turns NaN into NULL, so NULL there reads back as
NaN. Chunks and summaries carry no foreign key: the store deletes them with their series.
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
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

JSONType = JSON().with_variant(JSONB(), "postgresql")

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
    Column("note", Text, nullable=False, server_default=""),  # the team's word on the run
    Index("ix_runs_project_created", "project", "created_at"),
    Index("ix_runs_created", "created_at"),
)

# A run's tags, a row each: the run list filters by them.
run_tags = Table(
    "run_tags",
    metadata,
    Column("run_id", String(64), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(50), primary_key=True),
    Index("ix_run_tags_tag", "tag"),
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

# A series' points in chunks: one row holds up to `store.chunks.MAX` points as packed
# little-endian arrays (steps, seqs and epochs int64 with -1 for no epoch, wall times and
# values float64, NaN and ±Infinity exact on both databases), sorted by (step, wall, seq).
# A log post writes a row per series it touches, not a row per point, and a read decodes
# the few chunks its step range overlaps. Chunks of one series may overlap in steps when
# a resumed run logs a step again.
chunks = Table(
    "chunks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("series_id", Integer, nullable=False),  # no foreign key, as for summaries
    Column("first_step", BigInteger, nullable=False),
    Column("last_step", BigInteger, nullable=False),
    Column("count", Integer, nullable=False),
    Column("nonfinite", Integer, nullable=False),  # how many values are NaN or ±Infinity
    Column("steps", LargeBinary, nullable=False),
    Column("seqs", LargeBinary, nullable=False),
    Column("epochs", LargeBinary, nullable=False),
    Column("walls", LargeBinary, nullable=False),
    Column("vals", LargeBinary, nullable=False),
    Column("encoding", SmallInteger, nullable=False, server_default="0"),  # see store.chunks.ENCODINGS
    Index("ix_chunks_series_steps", "series_id", "first_step", "last_step"),
    Index("ix_chunks_series_newest", "series_id", "id"),  # a series' newest chunk: one probe
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

# Every (run, seq) ever stored, as ranges of consecutive seqs: the ledger that makes a
# retried batch count as duplicates, a row per gap in the seqs, not a row per record.
received = Table(
    "received",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("first_seq", BigInteger, primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
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
    Column("max_firings", Integer, nullable=False, server_default="100"),  # for each run, when not once a run
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
# Past the rule's `max_firings`, one row keyed "suppressed" counts the firings refused.
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
    Column("suppressed", Integer, nullable=False, server_default="0"),  # on the "suppressed" row: how many
    UniqueConstraint("rule_id", "run_id", "key", name="uq_rule_firings_once"),
    Index("ix_rule_firings_run", "run_id", "id"),
)
