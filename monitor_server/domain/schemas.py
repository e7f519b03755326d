"""Request and response bodies of API v1.

Metric values may be NaN or ±Infinity. They arrive as the bare JSON tokens or as the
strings "NaN", "Infinity", "-Infinity", and always leave as those strings, so that every
response is strict JSON.

The published JSON schema is the contract the server enforces, no looser and no stricter:
integers are JSON integers (an integral number such as 252.0 counts, as JSON Schema says),
text that the database keeps cannot hold NUL (a pattern says so), bodies take no unknown
fields, and bounds are exact integers.
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
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
)
from typing_extensions import TypedDict

from client_callbacks.wire import (
    ACK_STATUSES,
    COMMAND_TYPES,
    MAX_INT32,
    MAX_INT64,
    MAX_METRICS,
    MAX_NAME,
    RUN_ID_PATTERN,
    SCOPES,
)

MAX_RUNS_A_REQUEST = 100  # run ids one `?runs=a,b` takes: a request line well inside uvicorn's 16 kB


def run_ids_pattern(most: int = MAX_RUNS_A_REQUEST) -> str:
    """A pattern for `?runs=a,b`: 1 to `most` comma-separated run ids."""
    one = RUN_ID_PATTERN.strip("^$")
    return rf"^{one}(,{one}){{0,{most - 1}}}$"


NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL

RunStatus = Literal["running", "paused", "finished", "stopped", "failed", "interrupted"]
LIVE = ("running", "paused")  # a process is training it
# Where a record comes from: training batches, epochs, `evaluate()` calls, or the samples
# of the process and machine (CPU, memory, GPUs) taken beside the training.
Scope = Literal[SCOPES]
CommandType = Literal[COMMAND_TYPES]
CommandStatus = Literal["pending", "delivered", "applied", "failed", "cancelled"]


class Strict(BaseModel):
    """A request body: an unknown field is refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


def encode_float(value: float | None) -> float | str | None:
    """A float as strict JSON allows it: non-finite values become their names."""
    if value is None or math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _json_safe(value: Any) -> Any:
    """Config as strict JSON: non-finite floats become their names."""
    if isinstance(value, float):
        return encode_float(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def json_int(lo: int, hi: int) -> Any:
    """An integer in [lo, hi]: a JSON integer, or a number with no fraction (252.0), never
    text or a boolean. The schema says `integer` with exact bounds."""

    def integral(value: float) -> int:
        # Compared as integers: 2**63 as a float would pass a float comparison with 2**63 - 1.
        if not value.is_integer() or not lo <= int(value) <= hi:
            raise ValueError(f"must be an integer from {lo} to {hi}")
        return int(value)

    return Annotated[
        Annotated[StrictInt, Field(ge=lo, le=hi)] | Annotated[StrictFloat, AfterValidator(integral)],
        WithJsonSchema({"type": "integer", "minimum": lo, "maximum": hi}),
    ]


def text(max_length: int, min_length: int = 0) -> Any:
    """Text the database keeps: bounded, and no NUL."""
    return Annotated[str, StringConstraints(pattern=NO_NUL, min_length=min_length, max_length=max_length)]


Name = text(MAX_NAME, min_length=1)
RunId = Annotated[str, StringConstraints(pattern=RUN_ID_PATTERN)]
Config = Annotated[dict[str, Any], AfterValidator(_json_safe)]
# A stored float that may be non-finite, written to JSON as a number or a name.
OutFloat = Annotated[float, PlainSerializer(encode_float, return_type=float | str, when_used="json")]
InValue = StrictFloat | StrictInt | Literal["NaN", "Infinity", "-Infinity"]
IN_VALUE_SCHEMA = {"anyOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]}
NAME_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_NAME, "pattern": NO_NUL}
# Spelled out: pydantic would put the name pattern in patternProperties, which lets any
# other name through.
Metrics = Annotated[
    dict[Name, InValue],
    Field(max_length=MAX_METRICS),
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": MAX_METRICS,
            "propertyNames": NAME_SCHEMA,
            "additionalProperties": IN_VALUE_SCHEMA,
        }
    ),
]
Step = json_int(0, MAX_INT64)
MAX_TAGS = 20
# What Python's str.strip() takes for whitespace, spelled out so that every regex engine
# (pydantic's, a browser's, a schema checker's) reads the pattern alike.
SPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# A tag is kept as sent: no whitespace at either end (so never only whitespace), no NUL.
# A run's tags are a set, kept sorted.
TAG_PATTERN = rf"^[^\x00{SPACE}]([^\x00]*[^\x00{SPACE}])?$"
Tag = Annotated[str, StringConstraints(pattern=TAG_PATTERN, min_length=1, max_length=50)]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS), AfterValidator(lambda tags: sorted(set(tags)))]
Epoch = json_int(0, MAX_INT32)


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: RunId | None = None
    name: Name | None = None
    project: Name = "default"
    config: Config = Field(default_factory=dict)


class OptimizerRate(BaseModel):
    """One of a model's several optimizers, as `set_lr`'s `optimizer` names it."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    learning_rate: Annotated[StrictFloat | StrictInt, Field(allow_inf_nan=False)] | None = None
    settable: StrictBool = Field(True, description="false when the rate is a schedule")
    used: StrictBool = Field(True, description="false when it never applied an update while another optimizer did")


class Controls(BaseModel):
    """What the training says can be steered: settable params with their current values,
    the names of its actions, where checkpoints go, and each optimizer's rate when the model
    has several."""

    model_config = ConfigDict(extra="forbid")

    params: Annotated[Metrics, AfterValidator(_json_safe)] = Field(default_factory=dict)
    actions: Annotated[list[Name], Field(max_length=1000)] = Field(default_factory=list)
    checkpoint_dir: text(4096) | None = None
    optimizers: Annotated[list[OptimizerRate], Field(max_length=100)] | None = None


class RunPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: RunStatus | None = None
    reason: text(2000) | None = None
    name: Name | None = None
    config: Config | None = None
    controls: Controls | None = None
    tags: Tags | None = Field(None, description="the run's tags, all of them: they replace those it had")
    note: text(10_000) | None = None


class RunPublic(BaseModel):
    id: str
    name: str
    project: str
    status: RunStatus
    reason: str | None
    config: dict[str, Any] | None = Field(
        None,
        description="hyperparameters, fit parameters and where the run ran (`context`); "
        "not in the run list or its stream (up to a megabyte a run): read the run for it",
    )
    created_at: datetime
    updated_at: datetime
    last_seen: datetime
    latest: dict[str, OutFloat] = Field(description="last value of each epoch-scope series")
    controls: dict[str, Any] | None = Field(None, description="what the training says can be steered")
    tags: list[str] = Field(default_factory=list)
    note: str = ""

    def summary_json(self) -> dict[str, Any]:
        """The run as JSON, the way the list shows it: without its config."""
        return self.model_dump(mode="json", exclude={"config"})


class ProjectPublic(BaseModel):
    name: str
    runs: int = Field(description="how many runs it has")


class LogRecord(TypedDict):
    seq: Step
    scope: Scope
    step: Step
    epoch: NotRequired[Epoch | None]
    wall_time: Annotated[StrictFloat | StrictInt, Field(allow_inf_nan=False)]
    metrics: Metrics


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


class CommandAck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal[ACK_STATUSES] = Field(
        description="`cancelled`: the training withdrew it unapplied (a cancel reached it first)"
    )
    message: text(2000) | None = None
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
    at: dict[str, int] | None = Field(description="scheduled: `{step}` or `{epoch}` where it applies")
    issued_by: str | None = Field(
        description="role of the token that issued it (admin, or anonymous on an open server)"
    )
    cancel_requested_at: datetime | None = Field(
        description="when a cancel was asked after delivery; the training withdraws the command unless it applied it"
    )


class Skipped(BaseModel):
    run_id: str
    reason: str


class CommandsCreated(BaseModel):
    commands: list[CommandPublic] = Field(description="one for each running or paused run among the targets")
    skipped: list[Skipped] = Field(description="targets that took no command, and why")


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
