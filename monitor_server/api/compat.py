"""`POST /publish/epoch/end/`: the endpoint the stock `keras.callbacks.RemoteMonitor` posts to.

RemoteMonitor sends `{"epoch": n, **logs}` once an epoch, as the form field `data`
(default) or as a JSON body (`send_as_json=True`), with no sequence number; each post is
stored as the next record of the run named by `?run=` (default `remote-monitor`). The
server numbers them as writer 0 (seqs below 2**32), with the run locked, so concurrent
posts each get their own.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select

from ..access import Ingester
from ..db import reading, writing
from ..errors import BadJson, Invalid
from ..events import run_topic
from ..records import Record
from ..schemas import IN_VALUE_SCHEMA, NAME_SCHEMA, NO_NUL, RUN_ID_PATTERN, Epoch, InValue, Name, RunCreate, RunPublic
from ..store.logs import IngestResult, ingest
from ..store.runs import create_run, get_run_row, read_run
from ..tables import received
from .deps import BusDep, EngineDep, SettingsDep, WebhooksDep
from .logs import event_records
from .rules import announce_fired
from .runs import announce

router = APIRouter(tags=["compat"])

SERVER_SEQS = 2**32  # writer 0: clients draw writer ids from 1 up


class EpochLogs(BaseModel):
    """What RemoteMonitor sends: the epoch and the epoch's logs."""

    model_config = ConfigDict(
        extra="allow", json_schema_extra={"propertyNames": NAME_SCHEMA, "additionalProperties": IN_VALUE_SCHEMA}
    )
    __pydantic_extra__: dict[Name, InValue] = Field(init=False)

    epoch: Epoch | None = None


EPOCH_BODY = {
    "requestBody": {
        "required": True,
        "description": "the epoch's logs as JSON (`send_as_json=True`), or RemoteMonitor's default form with that JSON in field `data`",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EpochLogs"}}},
    }
}


class Published(BaseModel):
    accepted: int
    run_id: str


async def _payload(request: Request) -> EpochLogs:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        raw = form.get("data")
        if not isinstance(raw, str):
            raise Invalid("form field 'data' with the epoch's JSON is required")
    else:
        raw = await request.body()
    try:
        return EpochLogs.model_validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise BadJson("body is not valid JSON") from None
        raise


@router.post("/publish/epoch/end/", response_model=Published, dependencies=[Ingester], openapi_extra=EPOCH_BODY)
async def publish_epoch_end(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    bus: BusDep,
    webhooks: WebhooksDep,
    run: Annotated[str, Query(pattern=RUN_ID_PATTERN)] = "remote-monitor",
    project: Annotated[str, Query(min_length=1, max_length=200, pattern=NO_NUL)] = "default",
) -> Published:
    """Store one epoch posted by `keras.callbacks.RemoteMonitor` in run `run`."""
    posted = await _payload(request)
    epoch, metrics = posted.epoch, posted.__pydantic_extra__

    def store() -> tuple[IngestResult, RunPublic | None]:
        now = time.time()
        with writing(engine) as conn:
            _, created = create_run(conn, RunCreate(id=run, name=run, project=project), now)
            get_run_row(conn, run, lock=True)  # before reading the last seq: posts queue here
            own = (received.c.run_id == run) & (received.c.first_seq < SERVER_SEQS)
            last = conn.execute(select(func.max(received.c.last_seq)).where(own)).scalar()
            seq = 0 if last is None else last + 1
            step = seq if epoch is None else epoch
            record = Record(seq=seq, scope="epoch", step=step, epoch=step, wall_time=now, metrics=metrics)
            result = ingest(conn, run, [record], now, settings)
        if not created:
            return result, None
        with reading(engine) as conn:
            return result, read_run(conn, run, settings.stale_after)

    result, new_run = await run_in_threadpool(store)
    if new_run is not None:
        announce(bus, new_run)
    bus.publish(run_topic(run), "metrics", {"records": event_records(result.accepted)})
    announce_fired(bus, webhooks, result.fired)
    return Published(accepted=len(result.accepted), run_id=run)
