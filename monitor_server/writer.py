"""The log writer: one thread stores what every client posts, many posts a transaction.

With a hundred trainings each posting a few records twice a second, a post's fixed cost (a
transaction, a dozen statements, NumPy calls on a few points) outweighs its points.
Gathered, posts share it (`store.logs.ingest_many`), and they are stored in the order they
came: none waits behind a stream of later ones, as when each request raced the others for
SQLite's lock in its busy handler. On PostgreSQL each server process has its own writer;
they meet at the runs' row locks.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from .config import Settings
from .db import writing
from .schemas import CommandPublic
from .store.commands import deliver_many
from .store.logs import IngestResult, Post, ingest_many

MAX_POSTS = 64  # a batch: enough to share the fixed cost, few enough to answer soon
MAX_RECORDS = 20_000
_STOP = object()


@dataclass
class Stored:
    """What a post stored, and the commands its run has not acknowledged."""

    result: IngestResult
    commands: list[CommandPublic]
    delivered: list[CommandPublic]  # those of `commands` handed over by this post


@dataclass
class _Job:
    post: Post
    future: Future[Stored]


class LogWriter:
    """Stores posts on its own thread; `submit` answers with a future."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine, self._settings = engine, settings
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._later: deque[_Job] = deque()  # put off to the next batch: their run was in this one
        self._thread = threading.Thread(target=self._run, name="fitwatch-log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Store what was submitted, then end the thread."""
        self._queue.put(_STOP)
        self._thread.join()

    def submit(self, post: Post) -> Future[Stored]:
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
            records = 0
            while len(batch) < MAX_POSTS and records < MAX_RECORDS:
                job = self._take(block=not batch and not stopping)
                if job is None:
                    break
                if job is _STOP:
                    stopping = True
                elif job.post.run_id in batch:  # one post a run a batch: the next waits its turn
                    later.append(job)
                else:
                    batch[job.post.run_id] = job
                    records += len(job.post.records)
            self._later.extendleft(reversed(later))
            if not batch and stopping:
                return
            if batch:
                self._store(list(batch.values()))

    def _store(self, jobs: list[_Job]) -> None:
        try:
            with writing(self._engine) as conn:
                now = time.time()
                results = ingest_many(conn, [job.post for job in jobs], now, self._settings)
                stored = [job.post.run_id for job, r in zip(jobs, results) if isinstance(r, IngestResult)]
                deliveries = deliver_many(conn, stored, now)
        except Exception as exc:
            if len(jobs) > 1:  # store the others, and find the post at fault
                for job in jobs:
                    self._store([job])
            else:
                jobs[0].future.set_exception(exc)
            return
        for job, result in zip(jobs, results):
            if isinstance(result, Exception):
                job.future.set_exception(result)
            else:
                job.future.set_result(Stored(result, *deliveries[job.post.run_id]))
