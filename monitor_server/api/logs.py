"""Log ingest: the hot path of the server.

The body is decoded and checked in one pass straight from bytes (`records`), and stored in
one transaction off the event loop.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from ..access import Ingester
from ..db import reading, writing
from ..errors import Invalid
from ..events import run_topic
from ..records import Record, decode_log_body
from ..schemas import LogResult, RunPublic, encode_float
from ..store import commands as command_store
from ..store.logs import ingest
from ..store.runs import read_run
from .commands import announce as announce_command
from .deps import BusDep, EngineDep, RunIdPath, SettingsDep, WebhooksDep
from .rules import announce_fired
from .runs import announce

router = APIRouter(prefix="/api/v1/runs/{run_id}", tags=["logs"])

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
) -> LogResult:
    """Store a batch of records, each `(run, seq)` once; answer with the commands the
    training has not acknowledged yet."""
    body = await request.body()

    def store() -> tuple[LogResult, Any, list, RunPublic | None]:
        records = decode_log_body(body)
        if len(records) > settings.max_records:
            raise Invalid(f"at most {settings.max_records} records a request, got {len(records)}")
        now = time.time()
        with writing(engine) as conn:
            result = ingest(conn, run_id, records, now, settings)
            commands, delivered = command_store.deliver(conn, run_id, now)
        answer = LogResult(accepted=len(result.accepted), duplicates=result.duplicates, commands=commands)
        revived = None
        if result.revived:
            with reading(engine) as conn:
                revived = read_run(conn, run_id, settings.stale_after)
        return answer, result, delivered, revived

    answer, result, delivered, revived = await run_in_threadpool(store)
    topic = run_topic(run_id)
    if result.accepted and bus.has_subscribers(topic):
        bus.publish(topic, "metrics", {"records": event_records(result.accepted)})
    announce_fired(bus, webhooks, result.fired)
    for command in delivered:
        announce_command(bus, command)
    if revived is not None:
        announce(bus, revived)
    return answer
