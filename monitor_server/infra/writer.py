"""The log writer: one thread stores what every client posts, many posts a transaction.

With a hundred trainings each posting a few records twice a second, a post's fixed cost (a
transaction, a dozen statements, NumPy calls on a few points) outweighs its points.
Gathered, posts share it (`store.logs.ingest_many`), and they are stored in the order they
came: none waits behind a stream of later ones, as when each request raced the others for
SQLite's lock in its busy handler. On PostgreSQL each server process has its own writer;
they meet at the runs' row locks.

A post is one transaction only while it is small. A big one (a per-sample logging bug's
ten thousand new names, a million points) would hold the writer, and every other run's
post behind it, for seconds: `slices` cuts it into parts of bounded cost, which the route
submits one after the other, so others' posts are stored between them. Each part records
its own seqs with its points, so a retry after a part failed stores exactly what is
missing.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from ..config import Settings
from ..domain.records import Record
from ..store.logs import IngestResult, Post, ingest_many
from .db import writing

MAX_POSTS = 64  # a batch: enough to share the fixed cost, few enough to answer soon
MAX_POINTS = 100_000  # a batch's points, the post that passes it included
# What a part of a post may cost, in points: about 0.1 s of the writer's time. Each series a
# request logs to costs as much as NAME_COST points in the first part that logs to it (its
# row, its first chunk, a summary block each level), measured at 50-75 us a new series
# against about 1 us a point.
SLICE_COST = 100_000
NAME_COST = 64
_STOP = object()


@dataclass
class _Job:
    post: Post
    future: Future[IngestResult]


class LogWriter:
    """Stores posts on its own thread; `submit` answers with a future."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine, self._settings = engine, settings
        self._conn: Connection | None = None  # kept across batches: see `_connection`
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._later: deque[_Job] = deque()  # put off to the next batch: their run was in this one
        self._thread = threading.Thread(target=self._run, name="fitwatch-log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Store what was submitted, then end the thread."""
        self._queue.put(_STOP)
        self._thread.join()
        if self._conn is not None:
            self._conn.close()

    def submit(self, post: Post) -> Future[IngestResult]:
        """What the post stored, with the commands its run has not acknowledged."""
        job = _Job(post, Future())
        self._queue.put(job)
        return job.future

    def _take(self, block: bool) -> Any:
        if self._later:
            return self._later.popleft()
        try:
            return self._queue.get(block=block)
        except queue.Empty:
            return None

    def _run(self) -> None:
        stopping = False
        while True:
            batch: dict[str, _Job] = {}
            later: list[_Job] = []
            points = 0
            while len(batch) < MAX_POSTS and points < MAX_POINTS:
                job = self._take(block=not batch and not stopping)
                if job is None:
                    break
                if job is _STOP:
                    stopping = True
                elif job.post.run_id in batch:  # one post a run a batch: the next waits its turn
                    later.append(job)
                else:
                    batch[job.post.run_id] = job
                    points += job.post.points
            self._later.extendleft(reversed(later))
            if not batch and stopping:
                return
            if batch:
                self._store(list(batch.values()))

    def _connection(self) -> Connection:
        """The writer's own connection. One from the pool would cost a pre-ping, a round
        trip, every batch; this one is given up after any error (see `_store`)."""
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    def _store(self, jobs: list[_Job]) -> None:
        for attempt in range(2):
            try:
                with writing(self._engine, self._connection()) as conn:
                    results = ingest_many(conn, [job.post for job in jobs], time.time(), self._settings, deliver=True)
                break
            except Exception as exc:
                # A database that restarted can leave the connection broken without saying
                # so: the next try starts on a fresh one, checked by the pool's pre-ping.
                if self._conn is not None:
                    self._conn.invalidate()
                    self._conn = None
                if attempt == 0 and isinstance(exc, DBAPIError) and exc.connection_invalidated:
                    continue  # the batch found the connection dropped: store it on the new one
                return self._failed(jobs, exc)
        for job, result in zip(jobs, results):
            if isinstance(result, Exception):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    def _failed(self, jobs: list[_Job], exc: Exception) -> None:
        if len(jobs) > 1:  # store the others, and find the post at fault
            for job in jobs:
                self._store([job])
        else:
            jobs[0].future.set_exception(exc)


def slices(run_id: str, records: list[Record]) -> list[Post]:
    """A request's records cut, in order, into posts of at most `SLICE_COST` each: a point
    costs 1, a series NAME_COST in the first part that logs to it. When there are several
    parts, each carries for the series cap the names first logged to in it or a later one
    (those of earlier parts exist once those are stored)."""
    points = sum(len(r.metrics) for r in records)
    if points * (1 + NAME_COST) <= SLICE_COST:  # small even if every point were a new series
        return [Post(run_id, records)]
    starts: list[int] = [0]
    first_in: list[set[tuple[str, str]]] = [set()]  # names first logged to, per part
    seen: set[tuple[str, str]] = set()
    cost, last = 0, None
    for i, r in enumerate(records):
        new: set[tuple[str, str]] = set()
        if last is None or r.scope != last.scope or r.metrics.keys() != last.metrics.keys():
            new = {(r.scope, name) for name in r.metrics} - seen
            seen |= new
        record_cost = len(r.metrics) + NAME_COST * len(new)
        if cost + record_cost > SLICE_COST and i > starts[-1]:
            starts.append(i)
            first_in.append(set())
            cost = 0
        cost += record_cost
        first_in[-1] |= new
        last = r
    if len(starts) == 1:
        return [Post(run_id, records)]
    posts, later = [], set()
    for start, end, names in reversed(list(zip(starts, [*starts[1:], len(records)], first_in))):
        later = later | names
        posts.append(Post(run_id, records[start:end], frozenset(later)))
    return posts[::-1]
