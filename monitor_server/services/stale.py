"""Tells live streams when a silent run turns `interrupted`.

A run's status is computed when it is read (see `store.runs`), so nothing changes in the
database when a training process dies. This task looks every few seconds for the runs
whose silence has just passed `stale_after` and publishes them, so that open dashboards
show the change without a reload. With several server processes each publishes to its
own subscribers.
"""

from __future__ import annotations

import asyncio
import logging
import time

from anyio.to_thread import run_sync as run_in_threadpool
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..infra.bus import EventBus
from ..infra.db import reading
from ..store.runs import newly_stale
from . import announce

log = logging.getLogger("fitwatch")


async def watch(engine: Engine, bus: EventBus, stale_after: float) -> None:
    every = min(5.0, stale_after / 4)
    since = time.time()

    def sweep(since: float, now: float):
        with reading(engine) as conn:
            return newly_stale(conn, stale_after, since, now)

    while True:
        await asyncio.sleep(every)
        now = time.time()
        try:
            runs = await run_in_threadpool(sweep, since, now)
        except SQLAlchemyError as exc:  # the database is away: try the same window again
            log.warning("fitwatch: stale-run check failed: %s", exc)
            continue
        since = now
        for run in runs:
            announce.run(bus, run)
