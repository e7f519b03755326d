"""The exactly-once ledger: the seqs each run has stored, kept as ranges.

A row of `received` is a range of seqs, so the ledger grows by a row per gap, not per
record. A batch's duplicate check reads, in one query, the ranges that meet each post's
seqs; a post's new seqs are merged into the ranges they touch.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import Connection, Select, and_, bindparam, delete, func, or_, select

from client_callbacks.wire import SERVER_SEQS

from ..domain.records import Record
from .runs import get_run_row
from .sql import Fetch, bulk_insert
from .tables import received

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
BATCH = 64  # runs a ranges query asks for: 192 bound parameters


@functools.cache
def _ranges_of(n: int) -> Select:
    """The ranges of each of `n` runs that meet its [lo, hi]: one statement a batch, built
    once for each size (a round trip a post was a quarter of a batch's time on PostgreSQL)."""
    meets = (
        and_(
            received.c.run_id == bindparam(f"run{i}"),
            received.c.first_seq <= bindparam(f"hi{i}"),
            received.c.last_seq >= bindparam(f"lo{i}"),
        )
        for i in range(n)
    )
    return select(received).where(or_(*meets)).order_by(received.c.run_id, received.c.first_seq)


# The ranges are disjoint, so those starting between the first and the last range a post
# touches are exactly the ones it touches.
DROP_RANGES = delete(received).where(
    received.c.run_id == bindparam("run_id"), received.c.first_seq.between(bindparam("lo"), bindparam("hi"))
)


class Fresh(NamedTuple):
    """What of a post the run has not stored yet."""

    records: list[Record]  # first occurrence of each new seq, in the post's order
    seqs: np.ndarray  # their seqs, sorted
    known: list[tuple[int, int]]  # the run's ranges that meet or touch the post's seqs


class Asked(NamedTuple):
    """A post to a run, with its records' seqs (read from the records once)."""

    run_id: str
    records: list[Record]
    seqs: np.ndarray

    @classmethod
    def of(cls, run_id: str, records: list[Record]) -> Asked:
        return cls(run_id, records, np.array([r.seq for r in records], np.int64))


def ask(fetch: Fetch, posts: list[Asked]) -> list[list[Any]]:
    """Queue (see `sql.fetching`) the reads of the ranges that meet or touch the seqs of
    each of posts to distinct runs; `fresh` takes their rows."""
    asked = [post for post in posts if len(post.seqs)]
    found = []
    for i in range(0, len(asked), BATCH):  # within SQLite's limit of bound parameters
        part = asked[i : i + BATCH]
        params = {}
        for k, post in enumerate(part):
            params.update({f"run{k}": post.run_id, f"lo{k}": max(int(post.seqs.min()) - 1, INT64_MIN)})
            params[f"hi{k}"] = min(int(post.seqs.max()) + 1, INT64_MAX)
        found.append(fetch(_ranges_of(len(part)), params))
    return found


def fresh(posts: list[Asked], found: list[list[Any]]) -> list[Fresh]:
    """For each of `posts`, the records whose seq the run has not stored yet; `found`: the
    rows of the reads `ask` queued for them."""
    known: dict[str, list[tuple[int, int]]] = {}
    for row in (row for rows in found for row in rows):
        known.setdefault(row.run_id, []).append((row.first_seq, row.last_seq))
    return [_fresh(p.records, p.seqs, known.get(p.run_id, [])) if len(p.seqs) else Fresh([], p.seqs, []) for p in posts]


def _fresh(records: list[Record], seqs: np.ndarray, known: list[tuple[int, int]]) -> Fresh:
    ranges = np.array(known, np.int64).reshape(-1, 2)
    at = np.searchsorted(ranges[:, 0], seqs, side="right") - 1
    seen = (at >= 0) & (seqs <= ranges[np.maximum(at, 0), 1]) if len(ranges) else np.zeros(len(seqs), bool)
    unseen = np.flatnonzero(~seen)
    new_seqs, first = np.unique(seqs[unseen], return_index=True)
    return Fresh([records[i] for i in np.sort(unseen[first]).tolist()], new_seqs, known)


def record(conn: Connection, posts: list[tuple[str, Fresh]]) -> None:
    """Add each (run, fresh) post's seqs to the run's ranges, merged with those they touch
    (among `known`: read by `fresh`, not again)."""
    drops, rows = [], []
    for run_id, (_, seqs, known) in posts:
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
            drops.append({"run_id": run_id, "lo": touching[0][0], "hi": touching[-1][0]})
        rows.extend((run_id, first, last) for first, last in merged)
    if drops:
        conn.execute(DROP_RANGES, drops)
    bulk_insert(conn, received, rows)


def next_server_seq(conn: Connection, run_id: str) -> int:
    """The next seq of the server's own writer (0: seqs below SERVER_SEQS), for a record
    that came without one. Read under the run's lock, which the caller's transaction then
    holds: concurrent posts each get their own."""
    get_run_row(conn, run_id, lock=True)
    own = (received.c.run_id == run_id) & (received.c.first_seq < SERVER_SEQS)
    last = conn.execute(select(func.max(received.c.last_seq)).where(own)).scalar()
    return 0 if last is None else last + 1
