"""The few statements that SQLite and PostgreSQL spell differently."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import BigInteger, Connection, Double, Integer, LargeBinary, SmallInteger, String, Table
from sqlalchemy.dialects import postgresql, sqlite


def dialect_insert(conn: Connection, table: Table):
    """`INSERT` with the dialect's `ON CONFLICT` clauses available."""
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    return module.insert(table)


def insert_ignore(conn: Connection, table: Table, keys: list[str]):
    return dialect_insert(conn, table).on_conflict_do_nothing(index_elements=keys)


# PostgreSQL's names for the column types that bulk inserts carry, for binary COPY.
PG_TYPES = {
    SmallInteger: "int2",
    Integer: "int4",
    BigInteger: "int8",
    Double: "float8",
    LargeBinary: "bytea",
    String: "text",
}


def bulk_insert(conn: Connection, table: Table, rows: Sequence[tuple], columns: Sequence[str] | None = None) -> None:
    """Append rows given as tuples of `columns` (default: all, in table order): the ingest
    hot path.

    PostgreSQL gets binary `COPY` (no text to escape or parse: chunks are mostly bytes),
    SQLite a plain `executemany`; both skip SQLAlchemy's per-row parameter handling, which
    would cost more than the insert itself.
    """
    if not rows:
        return
    names = list(columns) if columns is not None else [c.name for c in table.columns]
    if conn.dialect.name == "postgresql":
        cursor = conn.connection.driver_connection.cursor()
        with cursor.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([PG_TYPES[type(table.c[name].type)] for name in names])
            for row in rows:
                copy.write_row(row)
    else:
        marks = ", ".join("?" * len(names))
        conn.exec_driver_sql(f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks})", rows)
