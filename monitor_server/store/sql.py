"""The few statements that SQLite and PostgreSQL spell differently."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import BigInteger, Connection, Double, Integer, LargeBinary, SmallInteger, String, Table
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


def bulk_params(conn: Connection, rows: Sequence[tuple]) -> Any:
    """`rows` as `bulk_rows` takes them: one tuple of column lists, or the rows."""
    if conn.dialect.name == "postgresql":
        return tuple(list(column) for column in zip(*rows))
    return rows


def bulk_insert(conn: Connection, table: Table, rows: Sequence[tuple], columns: Sequence[str] | None = None) -> None:
    """Append rows given as tuples of `columns` (default: all, in table order): the ingest
    hot path. One statement on PostgreSQL, whatever the rows (and unlike `COPY`, it can be
    pipelined: see `pipelined`); an `executemany` on SQLite. Both skip SQLAlchemy's per-row
    parameter handling, which would cost more than the insert itself."""
    if not rows:
        return
    names = list(columns) if columns is not None else [c.name for c in table.columns]
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) {bulk_rows(conn, table, names)}"
    conn.exec_driver_sql(sql, bulk_params(conn, rows))


@contextmanager
def pipelined(conn: Connection) -> Iterator[None]:
    """On PostgreSQL, send the statements of the block without waiting for their results:
    the server stores while Python goes on computing, and the round trips are paid once,
    at the end of the block, where any error of theirs is raised. Only statements whose
    results are not read belong in it (reading one raises `ResourceClosedError`)."""
    if conn.dialect.name != "postgresql" or not conn.dialect.loaded_dbapi.Pipeline.is_supported():  # libpq < 14
        yield
        return
    error = conn.dialect.loaded_dbapi.Error
    try:
        with conn.connection.driver_connection.pipeline():
            yield
    except error as exc:  # raised at the sync, past SQLAlchemy: wrap it as SQLAlchemy would
        raise DBAPIError.instance(None, None, exc, error, dialect=conn.dialect) from exc
