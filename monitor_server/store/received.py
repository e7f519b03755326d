"""The exactly-once ledger: the seqs each run has stored, kept as ranges.

A row of `received` is a range of seqs, so the ledger grows by a row per gap, not per
record. A post's duplicate check reads the ranges that meet its seqs; its new seqs are
merged into the ranges they touch.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sqlalchemy import Connection, bindparam, delete, select

from ..records import Record
from ..tables import received
from .sql import bulk_insert

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Built once: every post runs them.
RANGES = (
    select(received.c.first_seq, received.c.last_seq)
    .where(
        received.c.run_id == bindparam("run_id"),
        received.c.first_seq <= bindparam("hi"),
        received.c.last_seq >= bindparam("lo"),
    )
    .order_by(received.c.first_seq)
)
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


def _ranges(conn: Connection, run_id: str, lo: int, hi: int) -> list[tuple[int, int]]:
    """The run's ranges that meet or touch [lo, hi], in order."""
    lo, hi = max(lo - 1, INT64_MIN), min(hi + 1, INT64_MAX)
    return [tuple(row) for row in conn.execute(RANGES, {"run_id": run_id, "lo": lo, "hi": hi})]


def fresh(conn: Connection, run_id: str, records: list[Record]) -> Fresh:
    """The records whose seq this run has not stored yet."""
    if not records:
        return Fresh([], np.empty(0, np.int64), [])
    seqs = np.array([r.seq for r in records], np.int64)
    known = _ranges(conn, run_id, int(seqs.min()), int(seqs.max()))
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
