"""Log ingest: store each record of a batch exactly once, in one transaction.

The run's row is locked for the transaction (SQLite's write transactions are exclusive
anyway), so two requests for one run cannot interleave between the duplicate check and
the insert. The seqs stored are kept as ranges (`received`); points go into their series'
chunks (`store.chunks`), a row per series, and the series' running stats and summaries
are merged in the same pass. The
rules watching the run are judged on the new points of their series in the same
transaction (see `store.rules`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, delete, insert, select, update

from ..config import Settings
from ..downsample import group_starts
from ..errors import Invalid
from ..records import Record
from ..tables import received, series
from . import chunks as chunk_store
from . import rules as rule_store
from .runs import get_run_row, touch, was_stale
from .sql import bulk_insert
from .summaries import block_rows, merge_blocks

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass
class IngestResult:
    accepted: list[Record]
    duplicates: int
    revived: bool
    fired: rule_store.Fired = field(default_factory=rule_store.Fired)


def ingest(conn: Connection, run_id: str, records: list[Record], now: float, settings: Settings) -> IngestResult:
    """Store the records not stored before and judge the rules on them; the run must exist."""
    run = get_run_row(conn, run_id, lock=True)
    fresh, fresh_seqs, known = _fresh(conn, run_id, records)
    result = IngestResult(fresh, len(records) - len(fresh), was_stale(run, settings.stale_after, now))
    if fresh:
        _record_seqs(conn, run_id, fresh_seqs, known)
        watched = rule_store.watching(conn, run)
        points = _store_points(conn, run_id, fresh, rule_store.watched_series(watched), settings.max_series_per_run)
        if points:
            result.fired = rule_store.judge_post(conn, run, watched, points, now, settings.max_lr)
    touch(conn, run_id, now)
    return result


def _ranges(conn: Connection, run_id: str, lo: int, hi: int) -> list[tuple[int, int]]:
    """The run's received seq ranges that meet or touch [lo, hi], in order."""
    lo, hi = max(lo - 1, INT64_MIN), min(hi + 1, INT64_MAX)
    query = (
        select(received.c.first_seq, received.c.last_seq)
        .where(received.c.run_id == run_id, received.c.first_seq <= hi, received.c.last_seq >= lo)
        .order_by(received.c.first_seq)
    )
    return [tuple(row) for row in conn.execute(query)]


def _fresh(
    conn: Connection, run_id: str, records: list[Record]
) -> tuple[list[Record], np.ndarray, list[tuple[int, int]]]:
    """(the records whose seq this run has not stored yet, first occurrence only; their
    seqs, sorted; the received ranges that meet or touch the batch's seqs)."""
    if not records:
        return [], np.empty(0, np.int64), []
    seqs = np.array([r.seq for r in records], np.int64)
    known = _ranges(conn, run_id, int(seqs.min()), int(seqs.max()))
    ranges = np.array(known, np.int64).reshape(-1, 2)
    at = np.searchsorted(ranges[:, 0], seqs, side="right") - 1
    seen = (at >= 0) & (seqs <= ranges[np.maximum(at, 0), 1]) if len(ranges) else np.zeros(len(seqs), bool)
    unseen = np.flatnonzero(~seen)
    fresh_seqs, first = np.unique(seqs[unseen], return_index=True)
    return [records[i] for i in np.sort(unseen[first]).tolist()], fresh_seqs, known


def _record_seqs(conn: Connection, run_id: str, seqs: np.ndarray, known: list[tuple[int, int]]) -> None:
    """Add `seqs` (new to the run, sorted) to its received ranges, merged with those they
    touch (found among `known`, read by `_fresh`): the ledger grows by a row per gap, not
    per record."""
    breaks = np.flatnonzero(np.diff(seqs) != 1)
    new = list(zip(seqs[np.append(0, breaks + 1)].tolist(), seqs[np.append(breaks, len(seqs) - 1)].tolist()))
    touching = [(first, last) for first, last in known if last >= new[0][0] - 1 and first <= new[-1][1] + 1]
    merged: list[list[int]] = []
    for first, last in sorted(new + touching):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    if touching:
        firsts = [first for first, _ in touching]
        conn.execute(delete(received).where(received.c.run_id == run_id, received.c.first_seq.in_(firsts)))
    bulk_insert(conn, received, [(run_id, first, last) for first, last in merged])


def _store_points(
    conn: Connection, run_id: str, records: list[Record], watched: set[tuple[str, str]], max_series: int
) -> rule_store.Points:
    """Insert the points; give back those of the `watched` series, in step order."""
    keys, key_col, values, sizes = _flatten(records)
    if not values:
        return {}
    # Per-record columns, repeated once for each metric of the record.
    sizes_arr = np.array(sizes)
    step = np.repeat(np.array([r.step for r in records], np.int64), sizes_arr)
    seq = np.repeat(np.array([r.seq for r in records], np.int64), sizes_arr)
    epoch = np.repeat(np.array([-1 if r.epoch is None else r.epoch for r in records], np.int64), sizes_arr)
    wall = np.repeat(np.array([r.wall_time for r in records], np.float64), sizes_arr)
    key = np.asarray(key_col, np.int64)
    # By series and step; at one step, the point logged last comes last (seqs are ordered per
    # writer only, and a resumed run may log a step again): the order of points in a chunk.
    order = np.lexsort((seq, wall, step, key))
    key, step, seq, epoch, wall = key[order], step[order], seq[order], epoch[order], wall[order]
    # NumPy also reads the names "NaN", "Infinity" and "-Infinity".
    value = np.array(values, np.float64)[order]

    ids, new = _upsert_series(conn, run_id, list(keys), key, step, wall, seq, value, max_series)
    sid = ids[key]
    chunk_store.append(conn, sid, chunk_store.Decoded(step, seq, epoch, wall, value), new)
    merge_blocks(conn, block_rows(sid, step, wall, value))
    out = {}
    for name in watched & keys.keys():
        at = np.flatnonzero(key == keys[name])
        out[name] = (step[at], value[at])
    return out


def _flatten(records: list[Record]) -> tuple[dict[tuple[str, str], int], Any, list[Any], list[int]]:
    """(series keys, key index of each point, values, metrics per record).

    Keras logs the same metrics in the same order every batch: then the values come out
    in one pass with no per-point Python work.
    """
    scope, names = records[0].scope, tuple(records[0].metrics)
    if all(r.scope == scope and tuple(r.metrics) == names for r in records):
        keys = {(scope, name): k for k, name in enumerate(names)}
        values = list(chain.from_iterable(r.metrics.values() for r in records))
        return keys, np.tile(np.arange(len(names)), len(records)), values, [len(names)] * len(records)
    keys: dict[tuple[str, str], int] = {}
    key_col: list[int] = []
    values = []
    sizes = []
    for r in records:
        scope, metrics = r.scope, r.metrics
        sizes.append(len(metrics))
        for name, value in metrics.items():
            key_col.append(keys.setdefault((scope, name), len(keys)))
            values.append(value)
    return keys, key_col, values, sizes


def _upsert_series(
    conn: Connection,
    run_id: str,
    names: list[tuple[str, str]],
    key: np.ndarray,
    step: np.ndarray,
    wall: np.ndarray,
    seq: np.ndarray,
    value: np.ndarray,
    max_series: int,
) -> tuple[np.ndarray, set[int]]:
    """Create or update each touched series' running stats; (ids indexed by key, ids of
    the series made now).

    New series are inserted in one statement and their ids read back in one more: a post
    that brings thousands of new names costs two statements, not one per name. A post that
    would take the run past `max_series` names is refused whole.
    """
    existing = {(r.scope, r.name): r for r in conn.execute(select(series).where(series.c.run_id == run_id))}
    new_names = [n for n in names if n not in existing]
    if len(existing) + len(new_names) > max_series:
        raise Invalid(
            f"run {run_id!r} has {len(existing)} series and this post adds {len(new_names)} new names: "
            f"over the limit of {max_series} a run (FITWATCH_MAX_SERIES_PER_RUN); nothing of the post was stored"
        )
    starts = group_starts(key)
    ends = np.append(starts[1:], len(key)) - 1
    ids = np.zeros(len(names), np.int64)
    inserts, updates = [], []
    for start, end in zip(starts.tolist(), ends.tolist()):
        k = int(key[start])
        finite = value[start : end + 1][np.isfinite(value[start : end + 1])]
        new = {
            "count": end - start + 1,
            "first_step": int(step[start]),
            "last_step": int(step[end]),
            "last_wall": float(wall[end]),
            "last_seq": int(seq[end]),
            "last_value": float(value[end]),
            "min_value": float(finite.min()) if len(finite) else None,
            "max_value": float(finite.max()) if len(finite) else None,
        }
        old = existing.get(names[k])
        if old is None:
            scope, name = names[k]
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
        conn.execute(insert(series), inserts)
        created = select(series.c.id, series.c.scope, series.c.name).where(series.c.run_id == run_id)
        new_ids = {(r.scope, r.name): r.id for r in conn.execute(created)}
        for k, name in enumerate(names):
            if name not in existing:
                ids[k] = new_ids[name]
    if updates:
        stmt = update(series).where(series.c.id == bindparam("sid"))
        conn.execute(stmt, updates)
    return ids, {new_ids[name] for name in new_names} if inserts else set()


def _pick(fn, a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v is not None]
    return fn(values) if values else None
