"""Server-Sent Events: one stream per run, and one for the run list."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent

from ..access import Reader
from ..db import reading
from ..errors import NotFound
from ..events import RUNS_TOPIC, EventBus, run_topic
from ..store.runs import read_run
from .deps import BusDep, EngineDep, RunIdPath, SettingsDep

router = APIRouter(tags=["events"], dependencies=[Reader])

IDLE_S = 15.0
RETRY_MS = 1000  # how soon a browser reconnects a stream that broke (its default is 3 s)


async def _stream(
    bus: EventBus, topic: str, last_event_id: str | None, first: Callable[[], Awaitable[tuple[str, dict]]]
) -> AsyncIterator[ServerSentEvent]:
    """What a reconnecting stream missed (or `resync`), then `first()` (the state now,
    read once subscribed, so no change falls between the two), then each event as it
    comes; every one with the id a reconnect resumes from."""
    with bus.subscribe(topic, last_event_id=last_event_id) as sub:
        for number, event, data in sub.missed:
            yield _event(bus, number, event, data)
        yield _event(bus, sub.start, *await first(), retry=RETRY_MS)
        while not sub.done:
            item = await sub.get(IDLE_S)
            if item is not None:
                yield _event(bus, *item)


def _event(bus: EventBus, number: int, event: str, data: Any, retry: int | None = None) -> ServerSentEvent:
    return ServerSentEvent(id=bus.stream_id(number), event=event, raw_data=_json(data), retry=retry)


def _json(data: Any) -> str:
    try:
        return orjson.dumps(data).decode()
    except orjson.JSONEncodeError:  # an integer past 64 bits (a run's config): Python's json writes it exactly
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


LastEventId = Annotated[str | None, Header(max_length=100, description="the id of the last event received")]


def _read_run(run_id: str, engine, settings) -> dict:
    with reading(engine) as conn:
        return read_run(conn, run_id, settings.stale_after).model_dump(mode="json")


async def _current_run(run_id: RunIdPath, engine: EngineDep, settings: SettingsDep) -> dict:
    """The run, read before the stream starts: an unknown run is a 404, not a stream."""
    return await run_in_threadpool(_read_run, run_id, engine, settings)


@router.get("/api/v1/runs/{run_id}/events", response_class=EventSourceResponse)
async def run_events(
    run_id: RunIdPath,
    bus: BusDep,
    engine: EngineDep,
    settings: SettingsDep,
    run: Annotated[dict, Depends(_current_run)],
    last_event_id: LastEventId = None,
) -> AsyncIterator[ServerSentEvent]:
    """Live `metrics`, `command`, `rule` and `run` events of one run, starting with the
    run. A reconnect (`Last-Event-ID`) gets what it missed first, or `resync`: read again."""

    async def now() -> tuple[str, dict]:
        try:
            return "run", await run_in_threadpool(_read_run, run_id, engine, settings)
        except NotFound:  # deleted meanwhile: its `deleted` event follows
            return "run", run

    async for event in _stream(bus, run_topic(run_id), last_event_id, now):
        yield event


async def _ready() -> tuple[str, dict]:
    return "ready", {}


@router.get("/api/v1/events", response_class=EventSourceResponse)
async def runs_events(bus: BusDep, last_event_id: LastEventId = None) -> AsyncIterator[ServerSentEvent]:
    """A `run` event whenever a run is created or changes, `deleted` when one goes; it
    starts with `ready`. A reconnect gets what it missed first, or `resync`."""
    async for event in _stream(bus, RUNS_TOPIC, last_event_id, _ready):
        yield event
