"""Log ingest: store each record exactly once, several posts a transaction.

`ingest_many` stores posts of distinct runs in one pass, each statement once for them all
(the `writer` gathers the posts): a post's fixed cost of a transaction, a dozen statements
and a few dozen NumPy calls is shared. The runs' rows are locked for the transaction, in
id order (SQLite's write transactions are exclusive anyway), so two transactions for one
run cannot interleave between the duplicate check and the insert, and two replicas never
deadlock. What can refuse a post (no such run, too many series) is checked before anything
is written: a refused post leaves no trace and does not fail the others.

The seqs stored are kept as ranges (`store.received`); points go into their series' chunks
(`store.chunks`), a row per series, and the series' rows (`store.series_rows`) and
summaries are merged in the same pass. The rules watching a run are judged on its new points in the
same transaction (see `store.rules`).
"""

from __future__ import annotations

import itertools
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, or_, select

from ..config import Settings
from ..domain.errors import NotFound
from ..domain.records import Flat, Record, flatten
from ..domain.schemas import CommandPublic
from . import chunks as chunk_store
from . import commands as command_store
from . import received as received_store
from . import rules as rule_store
from . import series_rows
from .downsample import group_starts
from .runs import TOUCH, lock_runs, was_stale
from .sql import fetching, pipelined
from .summaries import block_columns, merge_blocks
from .tables import rules


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
    # With `deliver`: the run's unacknowledged commands, and those of them handed over now.
    commands: list[CommandPublic] = field(default_factory=list)
    delivered: list[CommandPublic] = field(default_factory=list)


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
RULES_OF_RUNS = select(rules).where(
    or_(rules.c.run_id.is_(None), rules.c.run_id.in_(bindparam("run_ids", expanding=True)))
)


def ingest(conn: Connection, run_id: str, records: list[Record], now: float, settings: Settings) -> IngestResult:
    """Store one post: what `ingest_many` stored, or its refusal raised."""
    (out,) = ingest_many(conn, [Post(run_id, records)], now, settings)
    if isinstance(out, Exception):
        raise out
    return out


def ingest_many(
    conn: Connection, posts: list[Post], now: float, settings: Settings, deliver: bool = False
) -> list[IngestResult | Exception]:
    """Store the records not stored before of posts to distinct runs, and judge the rules
    on them; per post, what was stored or why nothing of it was (`NotFound`, `Invalid`).
    With `deliver`, a stored post's result also hands its run's commands over (see
    `store.commands.deliver_many`), as the answer to a training's post does."""
    run_ids = sorted({post.run_id for post in posts})
    asked = [received_store.Asked.of(post.run_id, post.records) for post in posts]
    flats = [flatten(post.records) if post.records else None for post in posts]
    names = {key for flat in flats if flat for key in flat.keys}
    with fetching(conn) as fetch:  # every read the batch needs before it writes, in one round trip
        run_rows = lock_runs(conn, fetch, run_ids)  # first: what follows is read under the locks
        ranges = received_store.ask(fetch, asked)
        series_found = fetch(series_rows.OF_RUNS, {"run_ids": run_ids})
        rule_rows = fetch(RULES_OF_RUNS, {"run_ids": run_ids})
        tail_rows = chunk_store.small_tails(fetch, run_ids, names)
        command_rows = fetch(command_store.UNACKNOWLEDGED_OF_RUNS, {"run_ids": run_ids}) if deliver else []
    found = {row.id: row for row in run_rows}
    fresh_of = {post.run_id: fresh for post, fresh in zip(posts, received_store.fresh(asked, ranges))}
    out: list[IngestResult | Exception] = []
    storing: list[_Storing] = []
    for post, flat in zip(posts, flats):
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
            if len(fresh.records) < len(post.records):  # else they are the post's records
                flat = flatten(fresh.records)
            cap_names = flat.keys if post.cap_names is None else post.cap_names
            storing.append(_Storing(len(out) - 1, run, cap_names, fresh, result, flat))
    existing = series_rows.by_name(series_found)
    for s in storing:
        refusal = series_rows.over_limit(s.run.id, s.cap_names, existing.get(s.run.id, {}), settings.max_series_per_run)
        if refusal is not None:
            out[s.index] = refusal
    storing = [s for s in storing if out[s.index] is s.result]
    touched = [{"run_id": post.run_id, "now": now} for post, o in zip(posts, out) if isinstance(o, IngestResult)]
    if storing:
        _store(conn, storing, existing, rule_rows, chunk_store.tails_by_series(tail_rows), touched, now, settings)
    elif touched:
        conn.execute(TOUCH, touched)
    if deliver:
        _deliver(conn, posts, out, command_rows, now)
    return out


def _store(
    conn: Connection,
    storing: list[_Storing],
    existing: dict[str, dict[tuple[str, str], Any]],
    rule_rows: list[Any],
    tails: dict[int, Any],
    touched: list[dict[str, Any]],
    now: float,
    settings: Settings,
) -> None:
    """Write the fresh points of `storing` and what goes with them, then judge the rules."""
    # The writes go in one pipeline (see `sql.pipelined`), and the summaries are computed
    # while the server stores the chunks.
    watched = _watching(rule_rows, [s.run for s in storing])
    batch = _gather(storing)
    if batch is not None:
        ids, stats = series_rows.upsert(conn, batch.names, batch.key, batch.points, existing)
        sid = ids[batch.key]
    with pipelined(conn):
        if batch is not None:
            chunk_store.append(conn, sid, batch.points, tails)
            p = batch.points
            for part in _parts(sid, SUMMARY_PART):
                merge_blocks(conn, block_columns(sid[part], p.steps[part], p.walls[part], p.vals[part]))
            if stats:
                conn.execute(series_rows.STATS, stats)
        received_store.record(conn, [(s.run.id, s.fresh) for s in storing])
        conn.execute(TOUCH, touched)
    if batch is not None:
        for s in storing:
            points = batch.watched(s.run.id, watched[s.run.id])
            if points:
                s.result.fired = rule_store.judge_post(conn, s.run, watched[s.run.id], points, now, settings.max_lr)


def _deliver(
    conn: Connection, posts: list[Post], out: list[IngestResult | Exception], rows: list[Any], now: float
) -> None:
    """Hand each stored post's run its commands: those read with the batch's reads, under
    the run's lock (no command of the run can be issued or cancelled since), or, for a run
    whose rules issued commands in this post, read again with them."""
    done = [(post.run_id, o) for post, o in zip(posts, out) if isinstance(o, IngestResult)]
    fired = {run_id for run_id, result in done if result.fired.commands}
    deliveries = command_store.deliver_many(conn, [run_id for run_id, _ in done if run_id not in fired], now, rows)
    if fired:
        deliveries.update(command_store.deliver_many(conn, sorted(fired), now))
    for run_id, result in done:
        result.commands, result.delivered = deliveries[run_id]


def _parts(sid: np.ndarray, size: int) -> list[slice]:
    """`sid` (sorted) cut where a series starts into parts of `size` points or more, the
    last one aside."""
    starts = group_starts(sid)
    at = np.searchsorted(starts, np.arange(size, len(sid), size))
    bounds = [0, *np.unique(starts[at[at < len(starts)]]).tolist(), len(sid)]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


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
