"""What handlers get from the app (engine, settings, event bus, what storing a post needs) and
the run ids a request names (a path's, or `?runs=a,b`).

The getters are `async`: FastAPI runs a plain function dependency in its thread pool, a
thread hop for an attribute read, several a request."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import Engine

from ..config import Settings
from ..domain.schemas import MAX_RUNS_A_REQUEST, RUN_ID_PATTERN, run_ids_pattern
from ..infra.bus import EventBus
from ..services.ingest import Ingest


async def _engine(request: Request) -> Engine:
    return request.app.state.engine


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _bus(request: Request) -> EventBus:
    return request.app.state.bus


async def _ingest(request: Request) -> Ingest:
    return request.app.state.ingest


EngineDep = Annotated[Engine, Depends(_engine)]
SettingsDep = Annotated[Settings, Depends(_settings)]
BusDep = Annotated[EventBus, Depends(_bus)]
IngestDep = Annotated[Ingest, Depends(_ingest)]
RunIdPath = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="run id, [A-Za-z0-9_.-]{1,64}")]

_RUN_ID = re.compile(RUN_ID_PATTERN.strip("^$"))
_RUNS: dict[str, Any] = {
    "max_length": MAX_RUNS_A_REQUEST * 65,
    "json_schema_extra": {"pattern": run_ids_pattern()},  # checked in `_parsed`, to say which id is wrong
    "description": f"run ids, comma-separated, at most {MAX_RUNS_A_REQUEST}",
}


def _parsed(runs: str) -> list[str]:
    """The ids of `?runs=a,b`, each once in the order given; 422 naming a malformed one, or
    saying there are too many."""
    ids = list(dict.fromkeys(runs.split(",")))
    bad = next((run_id for run_id in ids if not _RUN_ID.fullmatch(run_id)), None)
    if bad is not None:
        why = f"{bad!r} is not a run id ([A-Za-z0-9_.-]{{1,64}}, comma-separated)"
    elif len(ids) > MAX_RUNS_A_REQUEST:
        why = f"{len(ids)} runs, at most {MAX_RUNS_A_REQUEST} a request"
    else:
        return ids
    raise RequestValidationError([{"loc": ("query", "runs"), "msg": why, "type": "value_error"}])


async def _run_ids(runs: Annotated[str, Query(min_length=1, **_RUNS)]) -> list[str]:
    return _parsed(runs)


async def _maybe_run_ids(runs: Annotated[str | None, Query(**_RUNS)] = None) -> list[str] | None:
    return None if runs is None else _parsed(runs)


RunIdsQuery = Annotated[list[str], Depends(_run_ids)]
MaybeRunIdsQuery = Annotated[list[str] | None, Depends(_maybe_run_ids)]
