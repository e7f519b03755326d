"""What the store asks of psycopg beyond SQLAlchemy: on the ingest path, reads queued in a
pipeline (see `sql.fetching`) and NumPy columns sent as arrays packed whole; and JSONB
numbers read back as what they were.

Imported only for a PostgreSQL database: psycopg comes with the `postgres` extra.
"""

from __future__ import annotations

import json
import struct
from typing import Any, NamedTuple

import numpy as np
from psycopg import postgres
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.rows import namedtuple_row
from psycopg.types.json import JsonbBinaryLoader, JsonbLoader
from sqlalchemy import Engine, event

# Element types of the arrays `pack_array` makes, big-endian as PostgreSQL sends them.
_ELEMENTS = {"int2": ">i2", "int4": ">i4", "int8": ">i8", "float8": ">f8"}


class PackedArray(NamedTuple):
    """A one-dimensional array in PostgreSQL's binary format, ready to send."""

    data: bytes
    oid: int  # of the array type


def pack_array(values: np.ndarray, element: str) -> PackedArray:
    """`values` as a PostgreSQL array of `element` (a masked array's masked items NULL).
    NumPy packs it at once: psycopg's own list dumper packs item by item in Python, which
    was most of the time a post's summaries took to send."""
    info = postgres.types[element]
    kind = np.dtype(_ELEMENTS[element])
    null = np.ma.getmaskarray(values)
    items = np.empty(len(values), [("size", ">i4"), ("value", kind)])
    items["size"] = np.where(null, -1, kind.itemsize)
    items["value"] = np.ma.getdata(values)
    raw = items.view(np.uint8).reshape(len(values), items.itemsize)
    if null.any():  # a NULL is its size, -1, alone
        raw = raw[~(null[:, None] & (np.arange(items.itemsize) >= 4))]
    header = struct.pack(">iiIii", 1, int(null.any()), info.oid, len(values), 1)
    return PackedArray(header + raw.tobytes(), info.array_oid)


class _PackedArrayDumper(Dumper):
    format = Format.BINARY

    def get_key(self, obj: PackedArray, format: Any) -> Any:
        return (PackedArray, obj.oid)

    def upgrade(self, obj: PackedArray, format: Any) -> Dumper:
        dumper = _PackedArrayDumper(PackedArray, self.connection)
        dumper.oid = obj.oid
        return dumper

    def dump(self, obj: PackedArray) -> bytes:
        return obj.data


def _int_or_float(text: str) -> int | float:
    value = int(text)
    return value if -(2**63) <= value < 2**63 else float(text)


def _load_jsonb(data: bytes) -> Any:
    # JSONB writes 1e300 out in full digits; read such numbers back as the floats they were
    # (no integer of a command's args passes 64 bits). Plain JSON columns (a run's config)
    # keep their text as sent and are read by psycopg's default, `json.loads`: exactly.
    return json.loads(data, parse_int=_int_or_float)


class _JsonbLoader(JsonbLoader):
    _loads = _load_jsonb


class _JsonbBinaryLoader(JsonbBinaryLoader):
    _loads = _load_jsonb


def prepare(engine: Engine) -> None:
    """Set `engine` up for `sql.fetching`, for `PackedArray` parameters and for JSONB."""

    @event.listens_for(engine, "connect")
    def adapters(dbapi_conn, _record) -> None:
        dbapi_conn.adapters.register_dumper(PackedArray, _PackedArrayDumper)
        dbapi_conn.adapters.register_loader("jsonb", _JsonbLoader)
        dbapi_conn.adapters.register_loader("jsonb", _JsonbBinaryLoader)

    @event.listens_for(engine, "do_execute", retval=True)
    def fetch_later(cursor, statement, parameters, context) -> bool:
        """A query `fetching` queues: SQLAlchemy compiled it and bound its parameters as
        always; it is sent on a cursor of its own, whose rows (named tuples, read as
        SQLAlchemy's rows are) `fetching` takes once the pipeline is synced. SQLAlchemy's
        cursor sees no result."""
        later = context.execution_options.get("fetch_later")
        if later is None:
            return False
        rows, queued = later
        own = cursor.connection.cursor(row_factory=namedtuple_row)
        own.execute(statement, parameters)
        queued.append((rows, own))
        return True
