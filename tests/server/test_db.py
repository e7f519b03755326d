"""Database set-up: SQLite in WAL mode with a busy timeout; migrations applied at start."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from monitor_server.db import make_engine, writing
from monitor_server.migrations import upgrade
from monitor_server.store.sql import bulk_insert, pipelined
from monitor_server.tables import received
from tests.conftest import needs_postgres


def test_sqlite_file_is_in_wal_mode_with_busy_timeout(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 30_000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        # FULL: a batch answered 200 is on disk, power cut or not.
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    engine.dispose()
    with sqlite3.connect(tmp_path / "w.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_migrations_create_the_schema_once(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    upgrade(engine)  # a second start changes nothing
    names = set(inspect(engine).get_table_names())
    assert {
        "runs",
        "series",
        "chunks",
        "summaries",
        "received",
        "commands",
        "rules",
        "rule_states",
        "rule_firings",
        "run_tags",
        "alembic_version",
    } <= names
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0008"
    assert {"issued_by", "cancel_requested_at"} <= {c["name"] for c in inspect(engine).get_columns("commands")}
    engine.dispose()


@needs_postgres
def test_chunks_are_compressed_with_lz4_on_postgresql(pg_database):
    """pglz took most of a PostgreSQL log post's time (bench/ingest.py); lz4 a fraction."""
    engine = make_engine(pg_database)
    upgrade(engine)
    query = "SELECT attname, attcompression FROM pg_attribute WHERE attrelid = 'chunks'::regclass AND attnum > 0"
    with engine.connect() as conn:
        methods = dict(conn.exec_driver_sql(query).all())
    engine.dispose()
    assert {name: methods[name] for name in ("steps", "seqs", "epochs", "walls", "vals")} == dict.fromkeys(
        ("steps", "seqs", "epochs", "walls", "vals"), "l"
    )


def test_unsupported_database_url_is_refused():
    with pytest.raises(ValueError, match="unsupported database URL"):
        make_engine("mysql://localhost/x")


def test_write_transactions_roll_back_on_error(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    upgrade(engine)
    with pytest.raises(RuntimeError), writing(engine) as conn:
        conn.execute(text("INSERT INTO received (run_id, first_seq, last_seq) VALUES ('r', 1, 1)"))
        raise RuntimeError("boom")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM received")).scalar() == 0
    engine.dispose()


def test_migrations_create_exactly_the_tables_module(database_url):
    """What the migrations build is what `tables.py` describes: no column, index or key
    missing on either side."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from monitor_server.tables import metadata

    engine = make_engine(database_url)
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert [d for d in diff if not (isinstance(d, tuple) and d[1] == "alembic_version")] == []


def test_a_pipelined_write_that_fails_is_raised_as_sqlalchemy_raises_it_and_stores_nothing(database_url):
    # On PostgreSQL the writes of a post are pipelined: their errors come at the sync, past
    # SQLAlchemy, and must still read as the error the API maps (here a 409, not a 500).
    engine = make_engine(database_url)
    upgrade(engine)
    with writing(engine) as conn:
        bulk_insert(conn, received, [("r", 1, 5)])
    with pytest.raises(IntegrityError), writing(engine) as conn, pipelined(conn):
        bulk_insert(conn, received, [("r", 7, 9)])
        bulk_insert(conn, received, [("r", 1, 3)])  # the same key again
    with engine.connect() as conn:
        assert conn.execute(select(received.c.first_seq, received.c.last_seq)).all() == [(1, 5)]
    engine.dispose()
