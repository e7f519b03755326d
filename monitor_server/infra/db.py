"""Engines and transactions for SQLite and PostgreSQL.

SQLite runs in WAL mode so readers never block the writer, with a long busy timeout, and
every write transaction starts with `BEGIN IMMEDIATE`: it takes the write lock up front, so
concurrent writers queue instead of failing with "database is locked" when a read
transaction tries to upgrade. PostgreSQL gets a sized pool with pre-ping, so a restarted
database costs one failed check, not a failed request.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_S = 60


def make_engine(url: str, pool_size: int = 10) -> Engine:
    """An engine for `url` with the settings each backend needs."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
            pool_size=pool_size,
            max_overflow=2 * pool_size,
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        _SQLITE_WRITERS[engine] = threading.Lock()
        return engine
    if parsed.get_backend_name() == "postgresql":
        from ..store import postgres  # psycopg comes with the `postgres` extra

        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_recycle=1800,
        )
        postgres.prepare(engine)
        return engine
    raise ValueError(
        f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: use sqlite:/// or postgresql+psycopg://"
    )


def _sqlite_on_connect(dbapi_conn, _record) -> None:
    # Let SQLAlchemy's begin event issue BEGIN itself instead of the driver's implicit one.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # what a post acknowledges is on disk
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA cache_size=-16384")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cur.close()


def _sqlite_on_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")


# One lock per SQLite engine: its writers wait on it, blocked and woken as it frees, instead
# of polling for the file lock in SQLite's busy handler, whose sleeps (up to 100 ms each) let
# some writers in first again and again while others wait seconds.
_SQLITE_WRITERS: WeakKeyDictionary[Engine, threading.Lock] = WeakKeyDictionary()


@contextmanager
def writing(engine: Engine, conn: Connection | None = None) -> Iterator[Connection]:
    """A write transaction: committed on success, rolled back on any error. On `conn`, a
    connection the caller keeps (see `writer.LogWriter`), or on one from the pool."""
    lock = _SQLITE_WRITERS.get(engine, nullcontext())
    held = nullcontext(conn) if conn is not None else engine.connect()
    with lock, held as conn, conn.execution_options(write=True).begin():
        yield conn


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read transaction: one consistent snapshot for several queries."""
    with engine.connect() as conn, conn.begin():
        yield conn


def backend(engine: Engine) -> str:
    """`sqlite` or `postgresql`, as `/healthz` reports it."""
    return engine.dialect.name
