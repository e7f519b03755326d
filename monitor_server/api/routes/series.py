"""Series: what a run has logged, and one series at the resolution a chart needs."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import orjson
from fastapi import APIRouter, Path, Query, Response

from ...domain.schemas import MAX_INT64, NO_NUL, Scope, SeriesData, SeriesInfo, encode_float
from ...infra.db import reading
from ...store import series as store
from ..access import Reader
from ..deps import EngineDep, RunIdPath

router = APIRouter(prefix="/api/v1/runs/{run_id}/series", tags=["series"], dependencies=[Reader])


@router.get("", response_model=list[SeriesInfo])
def list_series(run_id: RunIdPath, engine: EngineDep) -> list[SeriesInfo]:
    """Every series of the run with its count, step range, last value, min and max."""
    with reading(engine) as conn:
        return store.list_series(conn, run_id)


@router.get("/{scope}/{name:path}", response_model=SeriesData)
def read_series(
    run_id: RunIdPath,
    scope: Scope,
    name: Annotated[str, Path(min_length=1, max_length=200, pattern=NO_NUL)],
    engine: EngineDep,
    max_points: Annotated[int, Query(ge=10, le=200_000)] = 2000,
    since_step: Annotated[int | None, Query(ge=0, le=MAX_INT64)] = None,
    until_step: Annotated[int | None, Query(ge=0, le=MAX_INT64)] = None,
) -> Response:
    """Points of one series; more than `max_points` are downsampled to each bucket's
    min and max, keeping the first, the last and every non-finite point."""
    with reading(engine) as conn:
        row, count, downsampled, pts = store.read_series(conn, run_id, scope, name, max_points, since_step, until_step)
    values = pts.values.tolist()
    for i in np.flatnonzero(~np.isfinite(pts.values)).tolist():
        values[i] = encode_float(values[i])
    body = {
        "scope": row.scope,
        "name": row.name,
        "count": count,
        "downsampled": downsampled,
        "steps": pts.steps.tolist(),
        "values": values,
        "wall_times": pts.walls.tolist(),
    }
    return Response(orjson.dumps(body), media_type="application/json")
