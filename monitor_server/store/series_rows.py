"""A batch's series rows: read by name, the per-run limit on names, and created or
updated with their running stats (count, first and last step, last value, min, max), so
that the series list never reads points."""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, insert, select, update

from ..domain.errors import Invalid
from .chunks import Decoded
from .downsample import group_starts
from .tables import series

# The statements every post runs, built once (building one costs more than running it).
OF_RUNS = select(series).where(series.c.run_id.in_(bindparam("run_ids", expanding=True)))
NEW = insert(series)
# Series rows of the runs made after `after`: the runs are locked and ids only grow, so
# those are the rows this transaction just inserted.
MADE = select(series.c.id, series.c.run_id, series.c.scope, series.c.name).where(
    series.c.run_id.in_(bindparam("run_ids", expanding=True)), series.c.id > bindparam("after")
)
STATS = update(series).where(series.c.id == bindparam("sid"))


def by_name(rows: list[Any]) -> dict[str, dict[tuple[str, str], Any]]:
    """Each run's series rows by (scope, name)."""
    out: dict[str, dict[tuple[str, str], Any]] = {}
    for row in rows:
        out.setdefault(row.run_id, {})[(row.scope, row.name)] = row
    return out


def over_limit(
    run_id: str, cap_names: Collection[tuple[str, str]], existing: dict[tuple[str, str], Any], max_series: int
) -> Invalid | None:
    """The refusal of a post that would take its run past `max_series` names. One that adds
    none passes even where the run is past it (the limit was lowered since)."""
    new = sum(1 for name in cap_names if name not in existing)
    if new == 0 or len(existing) + new <= max_series:
        return None
    return Invalid(
        f"run {run_id!r} has {len(existing)} series and this post adds {new} new names: "
        f"over the limit of {max_series} a run (FITWATCH_MAX_SERIES_PER_RUN); nothing of the post was stored"
    )


def upsert(
    conn: Connection,
    names: list[tuple[str, str, str]],
    key: np.ndarray,
    points: Decoded,
    existing: dict[str, dict[tuple[str, str], Any]],
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Create the new series of a batch's points with their running stats; (ids indexed by
    key, the stat updates of the others, to run with the writes). `names`: (run, scope,
    name) of each key; `key`, `points`: of each point, sorted by series (see
    `store.logs`); `existing`: the runs' series rows by name (`by_name`).

    New series are inserted in one statement and their ids read back in one more: a post
    that brings thousands of new names costs two statements, not one per name. (RETURNING
    would make it one, but psycopg parses the long statements SQLAlchemy then sends each
    time: two to four times slower on PostgreSQL.)
    """
    p = points
    starts = group_starts(key)
    ends = np.append(starts[1:], len(key)) - 1
    ids = np.zeros(len(names), np.int64)
    inserts, updates = [], []
    for start, end in zip(starts.tolist(), ends.tolist()):
        k = int(key[start])
        finite = p.vals[start : end + 1][np.isfinite(p.vals[start : end + 1])]
        new = {
            "count": end - start + 1,
            "first_step": int(p.steps[start]),
            "last_step": int(p.steps[end]),
            "last_wall": float(p.walls[end]),
            "last_seq": int(p.seqs[end]),
            "last_value": float(p.vals[end]),
            "min_value": float(finite.min()) if len(finite) else None,
            "max_value": float(finite.max()) if len(finite) else None,
        }
        run_id, scope, name = names[k]
        old = existing.get(run_id, {}).get((scope, name))
        if old is None:
            inserts.append({"run_id": run_id, "scope": scope, "name": name, **new})
            continue
        ids[k] = old.id
        last_wall = -math.inf if old.last_wall is None else old.last_wall
        if (old.last_step, last_wall, old.last_seq) > (new["last_step"], new["last_wall"], new["last_seq"]):
            new.update(
                last_step=old.last_step, last_wall=old.last_wall, last_seq=old.last_seq, last_value=old.last_value
            )
        new["count"] += old.count
        new["first_step"] = min(new["first_step"], old.first_step)
        new["min_value"] = _pick(min, old.min_value, new["min_value"])
        new["max_value"] = _pick(max, old.max_value, new["max_value"])
        updates.append({"sid": old.id, **new})
    if inserts:
        conn.execute(NEW, inserts)
        run_ids = sorted({row["run_id"] for row in inserts})
        after = max((row.id for run_id in run_ids for row in existing.get(run_id, {}).values()), default=0)
        index = {name: k for k, name in enumerate(names)}
        for row in conn.execute(MADE, {"run_ids": run_ids, "after": after}):
            ids[index[(row.run_id, row.scope, row.name)]] = row.id
        if not ids.all():  # never store points under no series
            raise RuntimeError("new series rows were not found after their insert")
    return ids, updates


def _pick(fn, a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v is not None]
    return fn(values) if values else None
