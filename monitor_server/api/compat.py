"""`POST /publish/epoch/end/`: the endpoint the stock `keras.callbacks.RemoteMonitor` posts to.

RemoteMonitor sends `{"epoch": n, **logs}` once an epoch, as the form field `data`
(default) or as a JSON body (`send_as_json=True`), with no sequence number; each post is
stored as the next record of the run named by `?run=` (default `remote-monitor`). The
server numbers them as writer 0 (seqs below 2**32), with the run locked, so concurrent
posts each get their own.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, TypeAdapter
from sqlalchemy import func, select

from ..access import Ingester
from ..db import reading, writing
from ..errors import BadJson, Invalid
from ..events import run_topic
from ..schemas import RUN_ID_PATTERN, InValue, Name, RunCreate, RunPublic
from ..store.logs import ingest
from ..store.runs import create_run, get_run_row, read_run
from ..tables import received
from .deps import BusDep, EngineDep, SettingsDep
from .logs import event_records
from .runs import announce

router = APIRouter(tags=["compat"])

EpochLogs = TypeAdapter(dict[Name, InValue])
SERVER_SEQS = 2**32  # writer 0: clients draw writer ids from 1 up


class Published(BaseModel):
    accepted: int
    run_id: str


async def _payload(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        raw = form.get("data")
        if not isinstance(raw, str):
            raise Invalid("form field 'data' with the epoch's JSON is required")
    else:
        raw = (await request.body()).decode("utf-8", "replace")
    try:
        data = json.loads(raw)
    except ValueError:
        raise BadJson("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise Invalid("expected a JSON object of epoch logs")
    return data


@router.post("/publish/epoch/end/", response_model=Published, dependencies=[Ingester])
async def publish_epoch_end(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    bus: BusDep,
    run: Annotated[str, Query(pattern=RUN_ID_PATTERN)] = "remote-monitor",
    project: Annotated[str, Query(min_length=1, max_length=200)] = "default",
) -> Published:
    """Store one epoch posted by `keras.callbacks.RemoteMonitor` in run `run`."""
    data = await _payload(request)
    epoch = data.pop("epoch", None)
    if epoch is not None and (not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch < 2**31):
        raise Invalid("'epoch' must be a non-negative integer")
    metrics = EpochLogs.validate_python(data)

    def store() -> tuple[list[dict[str, Any]], RunPublic | None]:
        now = time.time()
        with writing(engine) as conn:
            _, created = create_run(conn, RunCreate(id=run, name=run, project=project), now)
            get_run_row(conn, run, lock=True)  # before reading the last seq: posts queue here
            own = (received.c.run_id == run) & (received.c.seq < SERVER_SEQS)
            last = conn.execute(select(func.max(received.c.seq)).where(own)).scalar()
            seq = 0 if last is None else last + 1
            step = seq if epoch is None else epoch
            record = {"seq": seq, "scope": "epoch", "step": step, "epoch": step, "wall_time": now, "metrics": metrics}
            accepted = ingest(conn, run, [record], now, settings.stale_after).accepted
        if not created:
            return accepted, None
        with reading(engine) as conn:
            return accepted, read_run(conn, run, settings.stale_after)

    accepted, new_run = await run_in_threadpool(store)
    if new_run is not None:
        announce(bus, new_run)
    bus.publish(run_topic(run), "metrics", {"records": event_records(accepted)})
    return Published(accepted=len(accepted), run_id=run)
