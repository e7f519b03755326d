"""Everything a stored post causes, in one place, for both ways points come in: a
training's log post (`store_posts`) and an epoch from keras.callbacks.RemoteMonitor
(`store_epoch`).

The store does the work in the post's transaction (points, the rules judged on them, the
commands they issue, the commands handed over to the training); after the commit the
streams hear of each (`announce`), a rule's webhook is queued, and a run that was stale
and logged again shows live.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from anyio.to_thread import run_sync as run_in_threadpool
from sqlalchemy import Engine

from ..config import Settings
from ..domain.records import Record, Value
from ..domain.schemas import LogResult, RunCreate, RunPublic
from ..infra.bus import EventBus
from ..infra.db import reading, writing
from ..infra.webhooks import Webhooks
from ..infra.writer import LogWriter
from ..store.logs import IngestResult, Post, ingest
from ..store.received import next_server_seq
from ..store.runs import create_run, read_run
from . import announce


@dataclass
class Ingest:
    """What storing a post needs of the app."""

    engine: Engine
    settings: Settings
    bus: EventBus
    webhooks: Webhooks
    writer: LogWriter


async def store_posts(app: Ingest, run_id: str, posts: list[Post]) -> LogResult:
    """Store a request's records, cut into `posts` (see `writer.slices`), through the log
    writer: each part stored and announced before the next is sent. The answer carries
    the run's commands its training has not acknowledged."""
    accepted = duplicates = 0
    for post in posts:
        result = await asyncio.wrap_future(app.writer.submit(post))
        await _announce(app, run_id, result)
        accepted += len(result.accepted)
        duplicates += result.duplicates
    return LogResult(accepted=accepted, duplicates=duplicates, commands=result.commands)


async def store_epoch(app: Ingest, run_id: str, project: str, epoch: int | None, metrics: dict[str, Value]) -> int:
    """Store one epoch that came without a seq as the next record of the server's own
    writer in run `run_id`, created if new; the records accepted (0 or 1). Numbered under
    the run's lock in the transaction that stores it, so it is stored here rather than
    gathered by the log writer."""

    def store() -> tuple[IngestResult, bool]:
        now = time.time()
        with writing(app.engine) as conn:
            _, created = create_run(conn, RunCreate(id=run_id, name=run_id, project=project), now)
            seq = next_server_seq(conn, run_id)
            step = seq if epoch is None else epoch
            record = Record(seq=seq, scope="epoch", step=step, epoch=step, wall_time=now, metrics=metrics)
            return ingest(conn, run_id, [record], now, app.settings), created

    result, created = await run_in_threadpool(store)
    if created:
        await _announce_run(app, run_id)
    await _announce(app, run_id, result)
    return len(result.accepted)


async def _announce(app: Ingest, run_id: str, result: IngestResult) -> None:
    """Tell the streams and webhooks what a stored post brought: points, firings, commands
    handed over, a run back from stale."""
    announce.points(app.bus, run_id, result.accepted)
    announce.fired(app.bus, app.webhooks, result.fired)
    for command in result.delivered:
        announce.command(app.bus, command)
    if result.revived:
        await _announce_run(app, run_id)


async def _announce_run(app: Ingest, run_id: str) -> None:
    """The run as it is now, to the run list's stream and its own (created, or back from stale)."""

    def read() -> RunPublic:
        with reading(app.engine) as conn:
            return read_run(conn, run_id, app.settings.stale_after)

    announce.run(app.bus, await run_in_threadpool(read))
