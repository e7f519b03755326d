"""Request and response bodies of API v1.

Metric values may be NaN or ±Infinity. They arrive as the bare JSON tokens or as the
strings "NaN", "Infinity", "-Infinity", and always leave as those strings, so that every
response is strict JSON.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictFloat,
    StrictInt,
    StringConstraints,
)
from typing_extensions import TypedDict

RUN_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
MAX_INT64 = 2**63 - 1

RunStatus = Literal["running", "finished", "stopped", "failed", "interrupted"]
Scope = Literal["batch", "epoch", "eval"]
CommandType = Literal["stop_training", "set_lr"]
CommandStatus = Literal["pending", "delivered", "applied", "failed", "cancelled"]


def encode_float(value: float | None) -> float | str | None:
    """A float as strict JSON allows it: non-finite values become their names."""
    if value is None or math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _no_nul(value: str) -> str:
    # PostgreSQL cannot store NUL in text: refuse it here rather than fail at the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _json_safe(value: Any) -> Any:
    """Config as strict JSON: non-finite floats become their names, NUL is refused."""
    if isinstance(value, float):
        return encode_float(value)
    if isinstance(value, str):
        return _no_nul(value)
    if isinstance(value, dict):
        return {_no_nul(str(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
Name = Annotated[Text, StringConstraints(min_length=1, max_length=200)]
RunId = Annotated[str, StringConstraints(pattern=RUN_ID_PATTERN)]
Config = Annotated[dict[str, Any], AfterValidator(_json_safe)]
# A stored float that may be non-finite, written to JSON as a number or a name.
OutFloat = Annotated[float, PlainSerializer(encode_float, return_type=float | str, when_used="json")]
InValue = StrictFloat | StrictInt | Literal["NaN", "Infinity", "-Infinity"]
Step = Annotated[StrictInt, Field(ge=0, le=MAX_INT64)]


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: RunId | None = None
    name: Name | None = None
    project: Name = "default"
    config: Config = Field(default_factory=dict)


class RunPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: RunStatus | None = None
    reason: Annotated[Text, StringConstraints(max_length=2000)] | None = None
    name: Name | None = None
    config: Config | None = None


class RunPublic(BaseModel):
    id: str
    name: str
    project: str
    status: RunStatus
    reason: str | None
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    last_seen: datetime
    latest: dict[str, OutFloat] = Field(description="last value of each epoch-scope series")


class LogRecord(TypedDict):
    seq: Step
    scope: Scope
    step: Step
    epoch: NotRequired[Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] | None]
    wall_time: Annotated[StrictFloat | StrictInt, Field(allow_inf_nan=False)]
    metrics: Annotated[dict[Name, InValue], Field(max_length=1000)]


class LogBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    records: list[LogRecord]


class LogResult(BaseModel):
    accepted: int
    duplicates: int
    commands: list[CommandPublic]


class SeriesInfo(BaseModel):
    scope: Scope
    name: str
    count: int
    first_step: int
    last_step: int
    last_value: OutFloat | None
    min: OutFloat | None
    max: OutFloat | None


class SeriesData(BaseModel):
    scope: Scope
    name: str
    count: int
    downsampled: bool
    steps: list[int]
    values: list[float | Literal["NaN", "Infinity", "-Infinity"]]
    wall_times: list[float]


class SetLrArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: Annotated[StrictFloat | StrictInt, Field(gt=0, allow_inf_nan=False)]


class CommandCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: CommandType
    args: dict[str, Any] = Field(default_factory=dict)


class CommandAck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["applied", "failed", "cancelled"] = Field(
        description="`cancelled`: the training withdrew it unapplied (a cancel reached it first)"
    )
    message: Annotated[Text, StringConstraints(max_length=2000)] | None = None
    step: Step | None = None


class CommandPublic(BaseModel):
    id: int
    run_id: str
    type: CommandType
    args: dict[str, Any]
    status: CommandStatus
    created_at: datetime
    delivered_at: datetime | None
    done_at: datetime | None
    message: str | None
    step: int | None
    issued_by: str | None = Field(
        description="role of the token that issued it (admin, or anonymous on an open server)"
    )
    cancel_requested_at: datetime | None = Field(
        description="when a cancel was asked after delivery; the training withdraws the command unless it applied it"
    )


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error: a message, or for invalid input the list of what is wrong."""

    detail: str | list[ErrorItem]


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["sqlite", "postgresql"]


def timestamp(seconds: float | None) -> datetime | None:
    """Stored UNIX seconds as an aware UTC datetime for the API."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


LogResult.model_rebuild()
