"""A run's records for the exports (`services.export`) and the report.

They are read in one transaction: the run's points are decoded from their chunks into
arrays (about 50 bytes a point) and put in the order they were logged; the transaction ends
there, and the records are streamed out one at a time (a CSV row a step) from the arrays.
So a reader that stalls or leaves midway holds no connection and no database snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from sqlalchemy import Connection, select

from .chunks import PACKED, unpack
from .tables import chunks, series


def records(conn: Connection, run_id: str, scope: str | None = None) -> Iterator[dict[str, Any]]:
    """The run's records (of `scope`) in the order they were logged (by wall time, then
    seq: seqs order the records of one writer only); NaN is a float here. All is read from
    `conn` before this returns: the iterator needs no transaction."""
    query = select(series.c.id, series.c.scope, series.c.name).where(series.c.run_id == run_id)
    if scope is not None:
        query = query.where(series.c.scope == scope)
    names = conn.execute(query.order_by(series.c.scope, series.c.name)).all()
    index = {row.id: i for i, row in enumerate(names)}
    parts, owners = [], []
    chunk_rows = select(chunks.c.series_id, *(chunks.c[c] for c in PACKED))
    for row in conn.execution_options(yield_per=500).execute(chunk_rows.where(chunks.c.series_id.in_(list(index)))):
        part = unpack(row)
        parts.append(part)
        owners.append(np.full(len(part), index[row.series_id]))
    if not parts:
        return iter(())
    steps, seqs, epochs, walls, vals = (np.concatenate(column) for column in zip(*parts))
    owner = np.concatenate(owners)
    order = np.lexsort((owner, seqs, walls))
    columns = (seqs[order], steps[order], epochs[order], walls[order], owner[order], vals[order])
    return _assembled(names, columns)


def _assembled(names: list[Any], columns: tuple[np.ndarray, ...]) -> Iterator[dict[str, Any]]:
    """Records from their points' columns (seq, step, epoch, wall time, series, value),
    sorted so that a record's points are next to each other."""
    record: dict[str, Any] | None = None
    for seq, step, epoch, wall, k, value in zip(*(c.tolist() for c in columns)):
        if record is None or record["seq"] != seq:
            if record is not None:
                yield record
            epoch = None if epoch < 0 else epoch
            record = {
                "seq": seq,
                "scope": names[k].scope,
                "step": step,
                "epoch": epoch,
                "wall_time": wall,
                "metrics": {},
            }
        record["metrics"][names[k].name] = value
    if record is not None:
        yield record


def by_step(records: Iterable[dict[str, Any]], window: int = 256) -> Iterator[dict[str, Any]]:
    """Records merged into one row a step, in the order they were logged. The callback logs
    a rate change as a record of its own just before its step's batch record (and Keras'
    worker threads may log a few batch records out of order): a record joins the row of its
    step among the last `window` rows, unless that row has one of its metrics already (a
    step logged again, by a resumed run). A row's epoch is the latest of its records'."""
    rows: dict[int, dict[str, Any]] = {}  # row number -> row, oldest first
    latest: dict[int, int] = {}  # step -> row number of its newest row
    for number, record in enumerate(records):
        row = rows.get(latest.get(record["step"], -1))
        if row is None or not row["metrics"].keys().isdisjoint(record["metrics"]):
            rows[number] = row = {**record, "metrics": {}}
            latest[record["step"]] = number
        elif record["epoch"] is not None:
            row["epoch"] = max(record["epoch"], row["epoch"] if row["epoch"] is not None else -1)
        row["metrics"].update(record["metrics"])
        if len(rows) > window:
            yield _forget(rows, latest)
    while rows:
        yield _forget(rows, latest)


def _forget(rows: dict[int, dict[str, Any]], latest: dict[int, int]) -> dict[str, Any]:
    """The oldest row, taken out of `rows` (and `latest`, when it is its step's newest)."""
    number = next(iter(rows))
    row = rows.pop(number)
    if latest.get(row["step"]) == number:
        del latest[row["step"]]
    return row


def series_names(conn: Connection, run_id: str, scope: str) -> list[str]:
    """The names of the run's series of `scope`, sorted."""
    query = select(series.c.name).where(series.c.run_id == run_id, series.c.scope == scope).order_by(series.c.name)
    return list(conn.execute(query).scalars())
