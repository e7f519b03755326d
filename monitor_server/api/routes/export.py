"""Exports: CSV in Keras' CSVLogger layout, and every record as JSON lines."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from ...domain.schemas import Scope
from ...services import export
from ..access import Reader
from ..deps import EngineDep, RunIdPath

router = APIRouter(prefix="/api/v1/runs/{run_id}", tags=["export"], dependencies=[Reader])


@router.get("/export.csv", response_class=StreamingResponse, responses={200: {"content": {"text/csv": {}}}})
def export_csv(run_id: RunIdPath, engine: EngineDep, scope: Scope = "epoch") -> StreamingResponse:
    """One row per record of `scope`: `epoch` (or `step,epoch`) then one column per metric."""
    export.check_run(engine, run_id)
    return StreamingResponse(
        export.csv_rows(engine, run_id, scope),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{run_id}-{scope}.csv"'},
    )


@router.get("/export.jsonl", response_class=StreamingResponse, responses={200: {"content": {"application/jsonl": {}}}})
def export_jsonl(run_id: RunIdPath, engine: EngineDep, scope: Scope | None = None) -> StreamingResponse:
    """Every record (of `scope`, or all) as it was logged, one JSON object a line, in the
    order they were logged."""
    export.check_run(engine, run_id)
    return StreamingResponse(
        export.jsonl(engine, run_id, scope),
        media_type="application/jsonl",
        headers={"Content-Disposition": f'attachment; filename="{run_id}.jsonl"'},
    )
