"""Exports of a run's records: CSV in Keras' CSVLogger layout, and JSONL.

Both stream row by row from one read transaction, so a run of millions of points is
exported without holding it in memory.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, select

from ..db import reading
from ..schemas import encode_float
from ..tables import points, series
from .runs import get_run_row


def _rows(conn: Connection, run_id: str, scope: str | None = None) -> Iterator[Any]:
    query = (
        select(
            points.c.seq,
            series.c.scope,
            points.c.step,
            points.c.epoch,
            points.c.wall_time,
            series.c.name,
            points.c.value,
        )
        .join(series, series.c.id == points.c.series_id)
        .where(series.c.run_id == run_id)
        # In the order they were logged: seqs order the records of one writer only.
        .order_by(points.c.wall_time, points.c.seq, series.c.name)
    )
    if scope is not None:
        query = query.where(series.c.scope == scope)
    yield from conn.execution_options(stream_results=True, yield_per=5000).execute(query)


def _records(rows: Iterator[Any]) -> Iterator[dict[str, Any]]:
    """Rows of consecutive seq folded back into the records the client sent."""
    record: dict[str, Any] | None = None
    for seq, scope, step, epoch, wall, name, value in rows:
        if record is None or record["seq"] != seq:
            if record is not None:
                yield record
            record = {"seq": seq, "scope": scope, "step": step, "epoch": epoch, "wall_time": wall, "metrics": {}}
        record["metrics"][name] = float("nan") if value is None else value
    if record is not None:
        yield record


def records(conn: Connection, run_id: str, scope: str | None = None) -> Iterator[dict[str, Any]]:
    """The run's records (of `scope`) as they were logged; NaN is a float here."""
    return _records(_rows(conn, run_id, scope))


def check_run(engine: Engine, run_id: str) -> None:
    with reading(engine) as conn:
        get_run_row(conn, run_id)


def jsonl(engine: Engine, run_id: str, scope: str | None = None) -> Iterator[bytes]:
    with reading(engine) as conn:
        for record in records(conn, run_id, scope):
            record["metrics"] = {k: encode_float(v) for k, v in record["metrics"].items()}
            yield orjson.dumps(record) + b"\n"


def csv_rows(engine: Engine, run_id: str, scope: str) -> Iterator[str]:
    with reading(engine) as conn:
        names = list(
            conn.execute(
                select(series.c.name).where(series.c.run_id == run_id, series.c.scope == scope).order_by(series.c.name)
            ).scalars()
        )
        lead = ["epoch"] if scope == "epoch" else ["step", "epoch"]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(lead + names)
        for record in records(conn, run_id, scope):
            first = [record["step"]] if scope == "epoch" else [record["step"], record["epoch"]]
            writer.writerow(first + [record["metrics"].get(name, "") for name in names])
            if buffer.tell() > 65536:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()
