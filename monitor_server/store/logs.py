"""Log ingest: store each record exactly once, several posts a transaction.

`ingest_many` stores posts of distinct runs in one pass, each statement once for them all
(the `writer` gathers the posts): a post's fixed cost of a transaction, a dozen statements
and a few dozen NumPy calls is shared. The runs' rows are locked for the transaction, in
id order (SQLite's write transactions are exclusive anyway), so two transactions for one
run cannot interleave between the duplicate check and the insert, and two replicas never
deadlock. What can refuse a post (no such run, too many series) is checked before anything
is written: a refused post leaves no trace and does not fail the others.

The seqs stored are kept as ranges (`store.received`); points go into their series' chunks
(`store.chunks`), a row per series, and the series' running stats and summaries are
merged in the same pass. The rules watching a run are judged on its new points in the
same transaction (see `store.rules`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, insert, or_, select, update

from ..config import Settings
from ..downsample import group_starts
from ..errors import Invalid, NotFound
from ..records import Flat, Record, flatten
from ..tables import rules, series
from . import chunks as chunk_store
from . import received as received_store
from . import rules as rule_store
from .runs import TOUCH, lock_runs, was_stale
from .sql import fetching, pipelined
from .summaries import block_columns, merge_blocks


@dataclass
class Post:
    """A log request's records for one run, or a part of them (see `writer.slices`)."""

    run_id: str
    records: list[Record]
    # The names the series cap judges: the post's own when None. A part of a request carries
    # its own and every later part's, so the cap refuses a request before any of it is
    # stored, and still judges the rest when a retry finds the first parts stored.
    cap_names: Collection[tuple[str, str]] | None = None

    @property
    def points(self) -> int:
        return sum(len(r.metrics) for r in self.records)


@dataclass
class IngestResult:
    accepted: list[Record]
    duplicates: int
    revived: bool
    fired: rule_store.Fired = field(default_factory=rule_store.Fired)


@dataclass
class _Storing:
    """A post whose fresh records are being stored."""

    index: int  # of the post in the batch
    run: Any
    cap_names: Collection[tuple[str, str]]
    fresh: received_store.Fresh
    result: IngestResult
    flat: Flat


# Summaries are computed and sent in parts of at least this many points, whole series
# each: PostgreSQL merges a part while the next is computed, and NumPy's arrays stay small
# (those of a whole 20,000-point post took 2.5 times as long).
SUMMARY_PART = 4096

# The statements every post runs, built once (building one costs more than running it).
SERIES_OF_RUNS = select(series).where(series.c.run_id.in_(bindparam("run_ids", expanding=True)))
NEW_SERIES = insert(series)
# Series rows of the runs made after `after`: the runs are locked and ids only grow, so
# those are the rows this transaction just inserted.
SERIES_MADE = select(series.c.id, series.c.run_id, series.c.scope, series.c.name).where(
    series.c.run_id.in_(bindparam("run_ids", expanding=True)), series.c.id > bindparam("after")
)
SERIES_STATS = update(series).where(series.c.id == bindparam("sid"))
RULES_OF_RUNS = select(rules).where(
    or_(rules.c.run_id.is_(None), rules.c.run_id.in_(bindparam("run_ids", expanding=True)))
)


def ingest(conn: Connection, run_id: str, records: list[Record], now: float, settings: Settings) -> IngestResult:
    """Store one post: what `ingest_many` stored, or its refusal raised."""
    (out,) = ingest_many(conn, [Post(run_id, records)], now, settings)
    if isinstance(out, Exception):
        raise out
    return out


def ingest_many(conn: Connection, posts: list[Post], now: float, settings: Settings) -> list[IngestResult | Exception]:
    """Store the records not stored before of posts to distinct runs, and judge the rules
    on them; per post, what was stored or why nothing of it was (`NotFound`, `Invalid`)."""
    run_ids = sorted({post.run_id for post in posts})
    asked = [received_store.Asked.of(post.run_id, post.records) for post in posts]
    with fetching(conn) as fetch:  # every read the batch needs before it writes, in one round trip
        run_rows = lock_runs(conn, fetch, run_ids)
        ranges = received_store.ask(fetch, asked)
        series_rows = fetch(SERIES_OF_RUNS, {"run_ids": run_ids})
        rule_rows = fetch(RULES_OF_RUNS, {"run_ids": run_ids})
    found = {row.id: row for row in run_rows}
    fresh_of = {post.run_id: fresh for post, fresh in zip(posts, received_store.fresh(asked, ranges))}
    out: list[IngestResult | Exception] = []
    storing: list[_Storing] = []
    for post in posts:
        run = found.get(post.run_id)
        if run is None:
            out.append(NotFound(f"run {post.run_id!r} not found"))
            continue
        fresh = fresh_of[run.id]
        result = IngestResult(
            fresh.records, len(post.records) - len(fresh.records), was_stale(run, settings.stale_after, now)
        )
        out.append(result)
        if fresh.records:
            flat = flatten(fresh.records)
            cap_names = flat.keys if post.cap_names is None else post.cap_names
            storing.append(_Storing(len(out) - 1, run, cap_names, fresh, result, flat))
    existing = _series_by_name(series_rows)
    for s in storing:
        refusal = _over_limit(s, existing.get(s.run.id, {}), settings.max_series_per_run)
        if refusal is not None:
            out[s.index] = refusal
    storing = [s for s in storing if out[s.index] is s.result]
    touched = [{"run_id": post.run_id, "now": now} for post, o in zip(posts, out) if isinstance(o, IngestResult)]
    if not storing:
        if touched:
            conn.execute(TOUCH, touched)
        return out
    # Every read first; then the writes go in one pipeline (see `sql.pipelined`), and the
    # summaries are computed while the server stores the chunks.
    watched = _watching(rule_rows, [s.run for s in storing])
    batch = _gather(storing)
    if batch is not None:
        ids, new, stats = _upsert_series(conn, batch, existing)
        sid = ids[batch.key]
        tails = chunk_store.small_tails(conn, set(ids.tolist()) - new)
    with pipelined(conn):
        if batch is not None:
            chunk_store.append(conn, sid, batch.points, tails)
            p = batch.points
            for part in _parts(sid, SUMMARY_PART):
                merge_blocks(conn, block_columns(sid[part], p.steps[part], p.walls[part], p.vals[part]))
            if stats:
                conn.execute(SERIES_STATS, stats)
        received_store.record(conn, [(s.run.id, s.fresh) for s in storing])
        conn.execute(TOUCH, touched)
    if batch is not None:
        for s in storing:
            points = batch.watched(s.run.id, watched[s.run.id])
            if points:
                s.result.fired = rule_store.judge_post(conn, s.run, watched[s.run.id], points, now, settings.max_lr)
    return out


def _parts(sid: np.ndarray, size: int) -> list[slice]:
    """`sid` (sorted) cut where a series starts into parts of `size` points or more, the
    last one aside."""
    starts = group_starts(sid)
    at = np.searchsorted(starts, np.arange(size, len(sid), size))
    bounds = [0, *np.unique(starts[at[at < len(starts)]]).tolist(), len(sid)]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def _series_by_name(rows: list[Any]) -> dict[str, dict[tuple[str, str], Any]]:
    """Each run's series rows by (scope, name)."""
    out: dict[str, dict[tuple[str, str], Any]] = {}
    for row in rows:
        out.setdefault(row.run_id, {})[(row.scope, row.name)] = row
    return out


def _over_limit(s: _Storing, existing: dict[tuple[str, str], Any], max_series: int) -> Invalid | None:
    """The refusal of a post that would take its run past `max_series` names. One that adds
    none passes even where the run is past it (the limit was lowered since)."""
    new = sum(1 for name in s.cap_names if name not in existing)
    if new == 0 or len(existing) + new <= max_series:
        return None
    return Invalid(
        f"run {s.run.id!r} has {len(existing)} series and this post adds {new} new names: "
        f"over the limit of {max_series} a run (FITWATCH_MAX_SERIES_PER_RUN); nothing of the post was stored"
    )


def _watching(found: list[Any], runs: list[Any]) -> dict[str, list[Any]]:
    """The rules (`found`: those of the batch's runs and of none) whose scope takes in each run."""
    return {
        run.id: [r for r in found if r.run_id in (None, run.id) and r.project in (None, run.project)] for run in runs
    }


@dataclass
class _Batch:
    """The points of a batch's posts, sorted by series and step: the order of points in a
    chunk (at one step, the point logged last comes last; seqs are ordered per writer
    only, and a resumed run may log a step again)."""

    names: list[tuple[str, str, str]]  # (run, scope, name) of each key
    key: np.ndarray  # of each point, into `names`
    points: chunk_store.Decoded

    def watched(self, run_id: str, rules_of_run: list[Any]) -> rule_store.Points:
        """The points of the run's series that its rules watch, in step order."""
        out: rule_store.Points = {}
        for scope, name in rule_store.watched_series(rules_of_run):
            at = np.flatnonzero(self.key == self.index.get((run_id, scope, name), -1))
            if len(at):
                out[(scope, name)] = (self.points.steps[at], self.points.vals[at])
        return out

    @cached_property
    def index(self) -> dict[tuple[str, str, str], int]:
        return {name: k for k, name in enumerate(self.names)}


def _gather(storing: list[_Storing]) -> _Batch | None:
    """The fresh points of all posts as one sorted batch; None when they hold none."""
    names: list[tuple[str, str, str]] = []
    columns: list[list[np.ndarray]] = [[] for _ in range(5)]  # key, step, seq, epoch, wall
    values: list[Any] = []
    for s in storing:
        flat, records = s.flat, s.fresh.records
        # Per-record columns, repeated once for each metric of the record.
        per_record = (
            np.array([r.step for r in records], np.int64),
            np.array([r.seq for r in records], np.int64),
            np.array([-1 if r.epoch is None else r.epoch for r in records], np.int64),
            np.array([r.wall_time for r in records], np.float64),
        )
        columns[0].append(np.asarray(flat.key_col, np.int64) + len(names))
        for column, array in zip(columns[1:], per_record):
            column.append(np.repeat(array, flat.sizes))
        names.extend((s.run.id, scope, name) for scope, name in flat.keys)
        values.extend(flat.values)
    if not values:
        return None
    key, step, seq, epoch, wall = (np.concatenate(c) for c in columns)
    order = np.lexsort((seq, wall, step, key))
    # NumPy also reads the names "NaN", "Infinity" and "-Infinity".
    value = np.array(values, np.float64)[order]
    return _Batch(names, key[order], chunk_store.Decoded(step[order], seq[order], epoch[order], wall[order], value))


def _upsert_series(
    conn: Connection, batch: _Batch, existing: dict[str, dict[tuple[str, str], Any]]
) -> tuple[np.ndarray, set[int], list[dict[str, Any]]]:
    """Create the batch's new series with their running stats; (ids indexed by key, ids
    of the series made now, the stat updates of the others, to run with the writes).
    `existing`: the runs' series rows.

    New series are inserted in one statement and their ids read back in one more: a post
    that brings thousands of new names costs two statements, not one per name. (RETURNING
    would make it one, but psycopg parses the long statements SQLAlchemy then sends each
    time: two to four times slower on PostgreSQL.)
    """
    key, p = batch.key, batch.points
    starts = group_starts(key)
    ends = np.append(starts[1:], len(key)) - 1
    ids = np.zeros(len(batch.names), np.int64)
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
        run_id, scope, name = batch.names[k]
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
    made: set[int] = set()
    if inserts:
        conn.execute(NEW_SERIES, inserts)
        run_ids = sorted({row["run_id"] for row in inserts})
        after = max((row.id for run_id in run_ids for row in existing.get(run_id, {}).values()), default=0)
        for row in conn.execute(SERIES_MADE, {"run_ids": run_ids, "after": after}):
            ids[batch.index[(row.run_id, row.scope, row.name)]] = row.id
            made.add(row.id)
        if not ids.all():  # never store points under no series
            raise RuntimeError("new series rows were not found after their insert")
    return ids, made, updates


def _pick(fn, a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v is not None]
    return fn(values) if values else None
