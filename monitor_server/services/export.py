"""Exports of a run's records: CSV in Keras' CSVLogger layout, and JSONL.

Both are read in one transaction (`store.export.records`), which ends before the first
line is sent: a reader that stalls or leaves midway holds no connection and no database
snapshot.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import orjson
from sqlalchemy import Engine

from ..domain.schemas import encode_float
from ..infra.db import reading
from ..store.export import by_step, records, series_names
from ..store.runs import get_run_row


def check_run(engine: Engine, run_id: str) -> None:
    with reading(engine) as conn:
        get_run_row(conn, run_id)


def jsonl(engine: Engine, run_id: str, scope: str | None = None) -> Iterator[bytes]:
    with reading(engine) as conn:
        found = records(conn, run_id, scope)
    for record in found:
        record["metrics"] = {k: encode_float(v) for k, v in record["metrics"].items()}
        yield orjson.dumps(record) + b"\n"


def csv_rows(engine: Engine, run_id: str, scope: str) -> Iterator[str]:
    with reading(engine) as conn:
        names = series_names(conn, run_id, scope)
        found = records(conn, run_id, scope)
    lead = ["epoch"] if scope == "epoch" else ["step", "epoch"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(lead + names)
    for record in by_step(found):
        first = [record["step"]] if scope == "epoch" else [record["step"], record["epoch"]]
        writer.writerow(first + [record["metrics"].get(name, "") for name in names])
        if buffer.tell() > 65536:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
