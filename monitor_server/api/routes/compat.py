"""`POST /publish/epoch/end/`: the endpoint the stock `keras.callbacks.RemoteMonitor` posts to.

RemoteMonitor sends `{"epoch": n, **logs}` once an epoch, as the form field `data`
(default) or as a JSON body (`send_as_json=True`), with no sequence number; each post is
stored as the next record of the run named by `?run=` (default `remote-monitor`), numbered
by the server as its own writer (`services.ingest.store_epoch`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...domain.errors import BadJson, Invalid
from ...domain.schemas import IN_VALUE_SCHEMA, NAME_SCHEMA, NO_NUL, RUN_ID_PATTERN, Epoch, InValue, Name
from ...services.ingest import store_epoch
from ..access import Ingester
from ..deps import IngestDep

router = APIRouter(tags=["compat"])


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
    ingest: IngestDep,
    run: Annotated[str, Query(pattern=RUN_ID_PATTERN)] = "remote-monitor",
    project: Annotated[str, Query(min_length=1, max_length=200, pattern=NO_NUL)] = "default",
) -> Published:
    """Store one epoch posted by `keras.callbacks.RemoteMonitor` in run `run`."""
    posted = await _payload(request)
    accepted = await store_epoch(ingest, run, project, posted.epoch, posted.__pydantic_extra__)
    return Published(accepted=accepted, run_id=run)
