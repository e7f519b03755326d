"""The few statements that SQLite and PostgreSQL spell differently."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from sqlalchemy import BigInteger, Connection, Double, Executable, Integer, LargeBinary, SmallInteger, String, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError


def dialect_insert(conn: Connection, table: Table):
    """`INSERT` with the dialect's `ON CONFLICT` clauses available."""
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    return module.insert(table)


def insert_ignore(conn: Connection, table: Table, keys: list[str]):
    return dialect_insert(conn, table).on_conflict_do_nothing(index_elements=keys)


# PostgreSQL's names for the column types that bulk inserts carry, for their array casts.
PG_TYPES = {
    SmallInteger: "int2",
    Integer: "int4",
    BigInteger: "int8",
    Double: "float8",
    LargeBinary: "bytea",
    String: "text",
}


def bulk_rows(conn: Connection, table: Table, columns: Sequence[str]) -> str:
    """The row source of a bulk insert of `columns`: on PostgreSQL one array parameter a
    column (`unnest`), on SQLite one parameter a value (run with `executemany`)."""
    if conn.dialect.name == "postgresql":
        arrays = ", ".join(f"%b::{PG_TYPES[type(table.c[name].type)]}[]" for name in columns)
        return f"SELECT * FROM unnest({arrays})"
    return f"VALUES ({', '.join('?' * len(columns))})"


def bulk_params(conn: Connection, table: Table, names: Sequence[str], columns: Sequence[Sequence | np.ndarray]) -> Any:
    """The `columns` named `names` as `bulk_rows` takes them: on PostgreSQL an array each
    (a NumPy column packed whole: see `postgres.pack_array`), on SQLite the rows."""
    if conn.dialect.name == "postgresql":
        from .postgres import pack_array

        return tuple(
            pack_array(column, PG_TYPES[type(table.c[name].type)]) if isinstance(column, np.ndarray) else list(column)
            for name, column in zip(names, columns)
        )
    return list(zip(*(c.tolist() if isinstance(c, np.ndarray) else c for c in columns)))


def bulk_insert(conn: Connection, table: Table, rows: Sequence[tuple], columns: Sequence[str] | None = None) -> None:
    """Append rows given as tuples of `columns` (default: all, in table order): the ingest
    hot path. One statement on PostgreSQL, whatever the rows (and unlike `COPY`, it can be
    pipelined: see `pipelined`); an `executemany` on SQLite. Both skip SQLAlchemy's per-row
    parameter handling, which would cost more than the insert itself."""
    if not rows:
        return
    names = list(columns) if columns is not None else [c.name for c in table.columns]
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) {bulk_rows(conn, table, names)}"
    conn.exec_driver_sql(sql, bulk_params(conn, table, names, list(zip(*rows))))


@contextmanager
def pipelined(conn: Connection) -> Iterator[None]:
    """On PostgreSQL, send the statements of the block without waiting for their results:
    the server stores while Python goes on computing, and the round trips are paid once,
    at the end of the block, where any error of theirs is raised. Only statements whose
    results are not read belong in it (reading one raises `ResourceClosedError`)."""
    if not _pipelines(conn):
        yield
        return
    error = conn.dialect.loaded_dbapi.Error
    try:
        with conn.connection.driver_connection.pipeline():
            yield
    except error as exc:  # raised at the sync, past SQLAlchemy: wrap it as SQLAlchemy would
        gone = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, None)
        if gone:
            conn.invalidate(exc)
        raise DBAPIError.instance(None, None, exc, error, connection_invalidated=gone, dialect=conn.dialect) from exc


def _pipelines(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql" and conn.dialect.loaded_dbapi.Pipeline.is_supported()  # libpq >= 14


Fetch = Callable[[Executable, dict[str, Any]], list[Any]]


@contextmanager
def fetching(conn: Connection) -> Iterator[Fetch]:
    """Queries whose rows are read after the block: `fetch(query, params)` answers with a
    list that holds the rows once the block is done. On PostgreSQL the queries are sent
    together and answered in one round trip, in order (a log post's half dozen reads cost a
    round trip each; see `postgres.prepare`); on SQLite each runs at once."""
    if not _pipelines(conn):
        yield lambda query, params: conn.execute(query, params).all()
        return
    queued: list[tuple[list[Any], Any]] = []

    def fetch(query: Executable, params: dict[str, Any]) -> list[Any]:
        rows: list[Any] = []
        conn.execute(query, params, execution_options={"fetch_later": (rows, queued)})
        return rows

    with pipelined(conn):
        yield fetch
    for rows, cursor in queued:
        rows.extend(cursor.fetchall())
        cursor.close()
