"""Series across runs: which series a set of runs has, and one series of each of them in
one answer. The compare page draws a metric of a hundred runs or more; a request a run
would queue behind a browser's six connections."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Path, Query, Response
from sqlalchemy import select

from ...domain.errors import NotFound
from ...domain.schemas import MAX_INT64, NO_NUL, Scope, encode_float
from ...infra.db import reading
from ...store import series as store
from ...store.tables import runs as run_table
from ...store.tables import series
from ..access import Reader
from ..deps import EngineDep, RunIdsQuery

router = APIRouter(prefix="/api/v1/series", tags=["series"], dependencies=[Reader])

MAX_POINTS_ALL = 200_000  # points in one answer, all runs together


def check_known(conn: Any, ids: list[str]) -> None:
    """404 naming the runs of `ids` that are not there."""
    known = set(conn.execute(select(run_table.c.id).where(run_table.c.id.in_(ids))).scalars())
    unknown = [run_id for run_id in ids if run_id not in known]
    if unknown:
        raise NotFound(f"no run {', '.join(map(repr, unknown[:10]))}" + (" and more" if len(unknown) > 10 else ""))


@router.get("")
def list_series_of_runs(ids: RunIdsQuery, engine: EngineDep) -> Response:
    """Every series the runs have, by scope and name, each with the runs that have it:
    `[{"scope", "name", "runs": [ids]}]`."""
    with reading(engine) as conn:
        check_known(conn, ids)
        rows = conn.execute(
            select(series.c.scope, series.c.name, series.c.run_id)
            .where(series.c.run_id.in_(ids))
            .order_by(series.c.scope, series.c.name)
        ).all()
    out: dict[tuple[str, str], list[str]] = {}
    for scope, name, run_id in rows:
        out.setdefault((scope, name), []).append(run_id)
    body = [{"scope": scope, "name": name, "runs": sorted(has, key=ids.index)} for (scope, name), has in out.items()]
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/{scope}/{name:path}")
def read_series_of_runs(
    scope: Scope,
    name: Annotated[str, Path(min_length=1, max_length=200, pattern=NO_NUL)],
    ids: RunIdsQuery,
    engine: EngineDep,
    max_points: Annotated[
        int,
        Query(
            ge=10,
            le=MAX_POINTS_ALL,
            description=f"a run's, as the series read of one run; lowered so that all runs together "
            f"are at most {MAX_POINTS_ALL}",
        ),
    ] = 2000,
    since_step: Annotated[int | None, Query(ge=0, le=MAX_INT64)] = None,
    until_step: Annotated[int | None, Query(ge=0, le=MAX_INT64)] = None,
) -> Response:
    """One series of each run, downsampled as the series read of one run does:
    `{"scope", "name", "series": [{"run_id", "count", "downsampled", "steps", "values",
    "wall_times"}], "missing": [ids of the runs without it], "max_points": a run's}`, in the
    order asked. A run's `max_points` is lowered where all would pass MAX_POINTS_ALL."""
    max_points = max(10, min(max_points, MAX_POINTS_ALL // len(ids)))
    found, missing = [], []
    with reading(engine) as conn:
        check_known(conn, ids)
        have = set(
            conn.execute(
                select(series.c.run_id).where(series.c.run_id.in_(ids), series.c.scope == scope, series.c.name == name)
            ).scalars()
        )
        for run_id in ids:
            if run_id not in have:
                missing.append(run_id)
                continue
            _, count, downsampled, pts = store.read_series(
                conn, run_id, scope, name, max_points, since_step, until_step
            )
            values = pts.values.tolist()
            for i in np.flatnonzero(~np.isfinite(pts.values)).tolist():
                values[i] = encode_float(values[i])
            found.append(
                {
                    "run_id": run_id,
                    "count": count,
                    "downsampled": downsampled,
                    "steps": pts.steps.tolist(),
                    "values": values,
                    "wall_times": pts.walls.tolist(),
                }
            )
    body = {"scope": scope, "name": name, "series": found, "missing": missing, "max_points": max_points}
    return Response(orjson.dumps(body), media_type="application/json")
