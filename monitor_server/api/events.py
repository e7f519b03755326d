"""Server-Sent Events: one stream per run, and one for the run list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent

from ..access import Reader
from ..db import reading
from ..events import RUNS_TOPIC, EventBus, run_topic
from ..store.runs import read_run
from .deps import BusDep, EngineDep, RunIdPath, SettingsDep

router = APIRouter(tags=["events"], dependencies=[Reader])

IDLE_S = 15.0


async def _stream(bus: EventBus, topic: str, first: dict | None = None) -> AsyncIterator[ServerSentEvent]:
    with bus.subscribe(topic) as sub:
        if first is not None:
            yield ServerSentEvent(event="run", raw_data=orjson.dumps(first).decode())
        while not sub.done:
            item = await sub.get(IDLE_S)
            if item is not None:
                event, data = item
                yield ServerSentEvent(event=event, raw_data=orjson.dumps(data).decode())


async def _current_run(run_id: RunIdPath, engine: EngineDep, settings: SettingsDep) -> dict:
    def read() -> dict:
        with reading(engine) as conn:
            return read_run(conn, run_id, settings.stale_after).model_dump(mode="json")

    return await run_in_threadpool(read)


@router.get("/api/v1/runs/{run_id}/events", response_class=EventSourceResponse)
async def run_events(
    run_id: RunIdPath, bus: BusDep, run: Annotated[dict, Depends(_current_run)]
) -> AsyncIterator[ServerSentEvent]:
    """Live `metrics`, `command` and `run` events of one run, starting with the run."""
    async for event in _stream(bus, run_topic(run_id), run):
        yield event


@router.get("/api/v1/events", response_class=EventSourceResponse)
async def runs_events(bus: BusDep) -> AsyncIterator[ServerSentEvent]:
    """A `run` event whenever a run is created or changes."""
    async for event in _stream(bus, RUNS_TOPIC):
        yield event
