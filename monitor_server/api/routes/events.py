"""Server-Sent Events: one stream for any set of runs and the run list, and one per run.

A browser holds at most six HTTP/1.1 connections to a server, so a page (or every tab of
one browser, through a shared worker) follows all it shows on one stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent

from ...domain.errors import NotFound
from ...infra.bus import RUNS_TOPIC, EventBus, Item, run_topic
from ...infra.db import reading
from ...store.runs import read_run
from ..access import Reader
from ..deps import BusDep, EngineDep, MaybeRunIdsQuery, RunIdPath, SettingsDep

router = APIRouter(tags=["events"], dependencies=[Reader])

IDLE_S = 15.0
RETRY_MS = 1000  # how soon a browser reconnects a stream that broke (its default is 3 s)
LIST_PREFIX = "list."  # names the run list's events in a stream that also follows runs

Opening = Callable[[], Awaitable[list[tuple[str, dict]]]]


def _as_sent(item: Item) -> tuple[str, Any]:
    return item[1], item[2]


async def _stream(
    bus: EventBus,
    topics: tuple[str, ...],
    last_event_id: str | None,
    opening: Opening,
    shown: Callable[[Item], tuple[str, Any]] = _as_sent,
) -> AsyncIterator[ServerSentEvent]:
    """What a reconnecting stream missed (and `resync` where it cannot be given), then
    `opening()` (the state now, read once subscribed, so no change falls between the
    two), then each event as it comes, named and shaped by `shown`; every one with the id
    a reconnect resumes from."""
    with bus.subscribe(*topics, last_event_id=last_event_id) as sub:
        for item in sub.missed:
            yield _event(bus, item[0], *shown(item))
        for i, (event, data) in enumerate(await opening()):
            yield _event(bus, sub.start, event, data, retry=RETRY_MS if i == 0 else None)
        while not sub.done:
            item = await sub.get(IDLE_S)
            if item is not None:
                yield _event(bus, item[0], *shown(item))


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

    async def now() -> list[tuple[str, dict]]:
        try:
            return [("run", await run_in_threadpool(_read_run, run_id, engine, settings))]
        except NotFound:  # deleted meanwhile: its `deleted` event follows
            return [("run", run)]

    async for event in _stream(bus, (run_topic(run_id),), last_event_id, now):
        yield event


def _read_runs(ids: list[str], engine, settings) -> list[tuple[str, dict]]:
    """Each run as it is, or `deleted` for one that is not there, read in one transaction."""
    opening = []
    with reading(engine) as conn:
        for run_id in ids:
            try:
                opening.append(
                    ("run", {"run_id": run_id, **read_run(conn, run_id, settings.stale_after).model_dump(mode="json")})
                )
            except NotFound:
                opening.append(("deleted", {"run_id": run_id, "id": run_id}))
    return opening


def _shown_with_runs(item: Item) -> tuple[str, Any]:
    """An event of a stream that follows runs: each run's names its run (`run_id`), the
    run list's are named `list.*`."""
    _number, event, data, topic = item
    if topic == RUNS_TOPIC:
        return LIST_PREFIX + event, data
    if topic.startswith("run:") and isinstance(data, dict):
        return event, {"run_id": topic.removeprefix("run:"), **data}
    return event, data  # a resync of everything


@router.get("/api/v1/events", response_class=EventSourceResponse)
async def events(
    bus: BusDep,
    engine: EngineDep,
    settings: SettingsDep,
    ids: MaybeRunIdsQuery,
    with_list: Annotated[bool, Query(alias="list", description="the run list's events too, with `runs`")] = False,
    resume: Annotated[
        str | None, Query(alias="last_event_id", max_length=100, description="as `Last-Event-ID`, which wins")
    ] = None,
    last_event_id: LastEventId = None,
) -> AsyncIterator[ServerSentEvent]:
    """Without `runs`, the run list's stream: a `run` event whenever a run is created or
    changes (without its config), `deleted` when one goes, `rule` for every firing; it
    starts with `ready`.

    With `runs`, their `metrics`, `command`, `rule`, `run` and `deleted` events, each
    naming its run (`run_id`); it starts with each run as it is (`run`, or `deleted` for
    one that is not there), then `ready`. With `list=true` as well, the run list's events
    named `list.run`, `list.deleted`, `list.rule` (and `list.resync`).

    A reconnect (`Last-Event-ID`, or `last_event_id` for a new EventSource, which cannot
    send the header) gets what it missed first; a `resync` (`{"run_id"}` for one run,
    `{}` for all) where that cannot be given: read again."""
    last_event_id = last_event_id or resume
    if ids is None:
        async for event in _stream(bus, (RUNS_TOPIC,), last_event_id, _ready):
            yield event
        return
    topics = tuple(run_topic(i) for i in ids) + ((RUNS_TOPIC,) if with_list else ())

    async def now() -> list[tuple[str, dict]]:
        return [*await run_in_threadpool(_read_runs, ids, engine, settings), ("ready", {})]

    async for event in _stream(bus, topics, last_event_id, now, _shown_with_runs):
        yield event


async def _ready() -> list[tuple[str, dict]]:
    return [("ready", {})]
