"""Log ingest: the hot path of the server.

The body is decoded and checked in one pass straight from bytes (`records`), and stored by
the log writer (`writer`), which stores many posts a transaction; a big body is stored in
parts, each announced on the streams as it is committed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine

from ..access import Ingester
from ..config import Settings
from ..db import reading
from ..errors import Invalid
from ..events import EventBus, run_topic
from ..records import Record, decode_log_body
from ..schemas import LogResult, RunPublic, encode_float
from ..store.logs import IngestResult, Post
from ..store.runs import read_run
from ..webhooks import Webhooks
from ..writer import slices
from .commands import announce as announce_command
from .deps import BusDep, EngineDep, RunIdPath, SettingsDep, WebhooksDep, WriterDep
from .rules import announce_fired
from .runs import announce

router = APIRouter(prefix="/api/v1/runs/{run_id}", tags=["logs"])

INLINE_DECODE_BYTES = 64 * 1024  # about 500 records: well under a millisecond

LOG_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LogBatch"}}},
    }
}


def event_records(records: list[Record]) -> list[dict[str, Any]]:
    """Accepted records as strict JSON for the live stream."""
    return [
        {
            "seq": r.seq,
            "scope": r.scope,
            "step": r.step,
            "epoch": r.epoch,
            "wall_time": r.wall_time,
            "metrics": {k: encode_float(float(v)) for k, v in r.metrics.items()},
        }
        for r in records
    ]


@router.post("/logs", response_model=LogResult, dependencies=[Ingester], openapi_extra=LOG_BODY)
async def post_logs(
    run_id: RunIdPath,
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    bus: BusDep,
    webhooks: WebhooksDep,
    writer: WriterDep,
) -> LogResult:
    """Store a batch of records, each `(run, seq)` once; answer with the commands the
    training has not acknowledged yet."""
    body = await request.body()

    def decode() -> list[Post]:
        records = decode_log_body(body)
        if len(records) > settings.max_records:
            raise Invalid(f"at most {settings.max_records} records a request, got {len(records)}")
        return slices(run_id, records)

    # A small body decodes faster than a hop to the thread pool and back, which under load
    # waits its turn for the interpreter lock; a large one must not hold up the event loop.
    parts = decode() if len(body) <= INLINE_DECODE_BYTES else await run_in_threadpool(decode)
    accepted = duplicates = 0
    for post in parts:  # each part stored and announced before the next is sent
        result = await asyncio.wrap_future(writer.submit(post))
        await _announce(result, run_id, bus, webhooks, engine, settings)
        accepted += len(result.accepted)
        duplicates += result.duplicates
    return LogResult(accepted=accepted, duplicates=duplicates, commands=result.commands)


async def _announce(
    result: IngestResult, run_id: str, bus: EventBus, webhooks: Webhooks, engine: Engine, settings: Settings
) -> None:
    """Tell the streams and webhooks what a stored post brought: points, firings, commands
    handed over, a run back from stale."""
    topic = run_topic(run_id)
    if result.accepted and bus.has_subscribers(topic):
        bus.publish(topic, "metrics", {"records": event_records(result.accepted)})
    announce_fired(bus, webhooks, result.fired)
    for command in result.delivered:
        announce_command(bus, command)
    if result.revived:

        def revived() -> RunPublic:
            with reading(engine) as conn:
                return read_run(conn, run_id, settings.stale_after)

        announce(bus, await run_in_threadpool(revived))
