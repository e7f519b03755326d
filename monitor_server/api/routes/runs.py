"""Runs: create (idempotent by id), list, read, change, delete."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import JSONResponse

from ...domain.errors import TooLarge
from ...domain.schemas import (
    LIVE,
    MAX_TAGS,
    NO_NUL,
    ProjectPublic,
    RunCreate,
    RunId,
    RunPatch,
    RunPublic,
    RunStatus,
    Tag,
)
from ...infra.bus import RUNS_TOPIC, run_topic
from ...infra.db import reading, writing
from ...services import announce
from ...store import commands as command_store
from ...store import runs as store
from ..access import Controller, Ingester, Reader
from ..deps import BusDep, EngineDep, RunIdPath, SettingsDep

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])
MAX_WITH_CONFIG = 100  # runs a page when it carries configs: each may be a megabyte
projects = APIRouter(prefix="/api/v1/projects", tags=["runs"])


def check_config(config: dict[str, Any] | None, limit: int) -> None:
    """Refuse a config over `limit` bytes of compact JSON: every read of the run carries it."""
    if config is None:
        return
    size = len(json.dumps(config, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limit:
        raise TooLarge(f"config is {size} bytes of JSON, over the limit of {limit} (FITWATCH_MAX_CONFIG_BYTES)")


@router.post(
    "",
    response_model=RunPublic,
    status_code=201,
    dependencies=[Ingester],
    responses={200: {"model": RunPublic, "description": "a run with this id exists: that run"}},
)
def create_run(body: RunCreate, response: Response, engine: EngineDep, settings: SettingsDep, bus: BusDep) -> RunPublic:
    """Create a run; with an `id` that exists, answer that run (200) instead."""
    check_config(body.config, settings.max_config_bytes)
    with writing(engine) as conn:
        row, created = store.create_run(conn, body, time.time())
    with reading(engine) as conn:
        run = store.read_run(conn, row.id, settings.stale_after)
    if created:
        announce.run(bus, run)
    else:
        response.status_code = status.HTTP_200_OK
    return run


@router.get(
    "",
    response_model=list[RunPublic],
    response_model_exclude={"__all__": {"config"}},  # of every run in the list
    dependencies=[Reader],
    responses={200: {"headers": {"X-Total-Count": {"description": "runs that pass the filters, all pages"}}}},
)
def list_runs(
    response: Response,
    engine: EngineDep,
    settings: SettingsDep,
    project: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
    status: RunStatus | None = None,
    q: Annotated[str | None, Query(max_length=200, pattern=NO_NUL, description="in the name or id, any case")] = None,
    tag: Annotated[list[Tag], Query(max_length=MAX_TAGS, description="runs with every one of these tags")] = [],  # noqa: B006
    sort: Annotated[
        str,
        Query(
            max_length=210,
            pattern=r"^(started|name|status|metric:[^\x00]+)$",
            description="`started`, `name`, `status`, or `metric:NAME`: the last value of epoch series NAME",
        ),
    ] = "started",
    order: Literal["asc", "desc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    id: Annotated[list[RunId], Query(max_length=MAX_WITH_CONFIG, description="only these runs")] = [],  # noqa: B006
    config: Annotated[
        bool, Query(description=f"with each run's config; then a page holds at most {MAX_WITH_CONFIG} runs")
    ] = False,
) -> list[RunPublic] | Response:
    """A page of runs, newest first unless sorted otherwise, without their configs unless
    `config=true` (the compare page reads its runs so; then a page holds at most 100 runs,
    each config may be a megabyte); `X-Total-Count` says how many pass the filters."""
    if config:
        limit = min(limit, MAX_WITH_CONFIG)
    with reading(engine) as conn:
        page, total = store.list_runs(
            conn, settings.stale_after, project, status, limit, offset, q, tag, sort, order == "desc", id, config
        )
    response.headers["X-Total-Count"] = str(total)
    if config:
        return JSONResponse([run.model_dump(mode="json") for run in page], headers={"X-Total-Count": str(total)})
    return page


@router.get("/{run_id}", response_model=RunPublic, dependencies=[Reader])
def read_run(run_id: RunIdPath, engine: EngineDep, settings: SettingsDep) -> RunPublic:
    """One run, with the last value of each epoch series in `latest`."""
    with reading(engine) as conn:
        return store.read_run(conn, run_id, settings.stale_after)


@router.patch("/{run_id}", response_model=RunPublic, dependencies=[Ingester])
def patch_run(run_id: RunIdPath, body: RunPatch, engine: EngineDep, settings: SettingsDep, bus: BusDep) -> RunPublic:
    """Change a run's status (with the reason it ended), name, config, controls, tags (the
    whole set) or note. Ending a run cancels the commands it never acknowledged."""
    check_config(body.config, settings.max_config_bytes)
    now = time.time()
    with writing(engine) as conn:
        store.patch_run(conn, run_id, body, now)
        ended = body.status is not None and body.status not in LIVE
        cancelled = command_store.cancel_unapplied(conn, run_id, body.status, now) if ended else []
    with reading(engine) as conn:
        run = store.read_run(conn, run_id, settings.stale_after)
    for command in cancelled:
        announce.command(bus, command)
    announce.run(bus, run)
    return run


@router.delete("/{run_id}", status_code=204, dependencies=[Controller])
def delete_run(run_id: RunIdPath, engine: EngineDep, bus: BusDep) -> Response:
    """Delete a run with its points and commands."""
    with writing(engine) as conn:
        store.delete_run(conn, run_id)
    bus.publish(RUNS_TOPIC, "deleted", {"id": run_id})
    bus.publish(run_topic(run_id), "deleted", {"id": run_id})
    return Response(status_code=204)


@projects.get("", response_model=list[ProjectPublic], dependencies=[Reader])
def list_projects(engine: EngineDep) -> list[ProjectPublic]:
    """Every project that has runs, by name, with how many."""
    with reading(engine) as conn:
        return [ProjectPublic(name=name, runs=count) for name, count in store.projects(conn)]
