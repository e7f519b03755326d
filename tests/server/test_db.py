"""Database set-up: SQLite in WAL mode with a busy timeout; migrations applied at start."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from monitor_server.infra.db import make_engine, writing
from monitor_server.migrations import upgrade
from monitor_server.store.sql import bulk_insert, fetching, pipelined
from monitor_server.store.tables import received
from tests.support.databases import needs_postgres


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
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0011"
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

    from monitor_server.store.tables import metadata

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


@needs_postgres
def test_numpy_columns_reach_postgresql_exactly_nulls_and_extremes_included(pg_database):
    """Bulk parameters packed by NumPy (`postgres.pack_array`) read back as the same
    values: every type the bulk inserts carry, their limits, NaN and ±Infinity, and the
    masked items as NULL."""
    from monitor_server.store.postgres import pack_array

    columns = {
        "int2": np.array([-(2**15), 0, 7, 2**15 - 1]),
        "int4": np.array([-(2**31), -1, 3, 2**31 - 1]),
        "int8": np.array([-(2**63), -5, 11, 2**63 - 1]),
        "float8": np.array([-np.inf, np.nan, 1e-300, np.inf]),
    }
    masked = np.ma.masked_array([1.5, 2.5, 3.5, 4.5], mask=[False, True, False, True])
    engine = make_engine(pg_database)
    with engine.connect() as conn:
        for element, values in columns.items():
            (back,) = conn.exec_driver_sql(f"SELECT %b::{element}[]", (pack_array(values, element),)).one()
            np.testing.assert_array_equal(np.array(back, float), values.astype(float))
        (back,) = conn.exec_driver_sql("SELECT %b::float8[]", (pack_array(masked, "float8"),)).one()
    engine.dispose()
    assert back == [1.5, None, 3.5, None]


def test_fetched_rows_read_as_executed_ones(database_url):
    """`fetching` (one round trip for several reads on PostgreSQL) answers each query with
    the rows `execute` reads: the same values by the same names, JSON as it was stored."""
    from monitor_server.store.runs import RUN
    from monitor_server.store.tables import runs

    engine = make_engine(database_url)
    upgrade(engine)
    config = {"big": 1e300, "int": 2**62, "list": [1, 2.5, None], "text": "é"}
    values = {"id": "r", "name": "r", "project": "p", "status": "running", "config": config}
    with writing(engine) as conn:
        conn.execute(runs.insert().values(created_at=1.0, updated_at=1.0, last_seen=1.0, **values))
        bulk_insert(conn, received, [("r", 1, 5), ("r", 9, 12)])
    queries = [(RUN, {"run_id": "r"}), (select(received).order_by(received.c.first_seq), {}), (RUN, {"run_id": "x"})]
    with writing(engine) as conn:
        executed = [conn.execute(query, params).all() for query, params in queries]
        with fetching(conn) as fetch:
            fetched = [fetch(query, params) for query, params in queries]
    engine.dispose()
    assert [[row._asdict() for row in rows] for rows in fetched] == [
        [row._asdict() for row in rows] for rows in executed
    ]
    assert fetched[0][0].config == config and fetched[2] == []
