"""The commands a training understands, as one discriminated union on `type`.

Validation, the OpenAPI schema and the page's controls all come from these classes. Each
command may carry `at` (`{"step": N}` or `{"epoch": N}`): the training holds it and
applies it exactly there. Limits that are settings of a server (`FITWATCH_MAX_LR`) are
checked by `check_limits` and written into the published schema by the app.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    WithJsonSchema,
    model_validator,
)

from client_callbacks.wire import MAX_INT32, MAX_INT64

from .errors import Invalid, clip
from .schemas import NO_NUL, RUN_ID_PATTERN, Name, Strict, json_int

CHECKPOINT_NAME = r"^[A-Za-z0-9_.-]{1,64}$"  # a file name in the checkpoint folder, never a path
MAX_PAUSE = 7 * 24 * 3600.0


def finite_number(*, exclusive_minimum: float | None = None, maximum: float | None = None) -> Any:
    """A finite JSON number (an integer counts) as a float; the schema says exactly that."""
    constraints: dict[str, Any] = {"allow_inf_nan": False}
    schema: dict[str, Any] = {"type": "number"}
    if exclusive_minimum is not None:
        constraints["gt"] = exclusive_minimum
        schema["exclusiveMinimum"] = exclusive_minimum
    if maximum is not None:
        constraints["le"] = maximum
        schema["maximum"] = maximum
    return Annotated[StrictFloat | StrictInt, Field(**constraints), AfterValidator(float), WithJsonSchema(schema)]


class AtStep(Strict):
    step: json_int(0, MAX_INT64)


class AtEpoch(Strict):
    epoch: json_int(0, MAX_INT32)


class Command(Strict):
    at: AtStep | AtEpoch | None = Field(
        None, description="apply exactly at this global step, or at the first batch of this epoch"
    )


class NoArgs(Strict):
    pass


class StopTraining(Command):
    """Set `model.stop_training`: the batch under way is the last."""

    type: Literal["stop_training"]
    args: NoArgs = Field(default_factory=NoArgs)


class OneOptimizer(Strict):
    optimizer: json_int(0, 999) | Name | None = Field(
        None,
        description="which of the model's optimizers (its index or name in the run's `controls.optimizers`); "
        "absent: every optimizer whose rate is not a schedule",
    )


class LrValue(OneOptimizer):
    value: finite_number(exclusive_minimum=0) = Field(description="the new rate; at most the server's FITWATCH_MAX_LR")


class LrFactor(OneOptimizer):
    factor: finite_number(exclusive_minimum=0, maximum=1000.0) = Field(description="multiply the current rate")


class SetLr(Command):
    """Set the optimizers' learning rate, or multiply it (a schedule cannot be set)."""

    type: Literal["set_lr"]
    args: LrValue | LrFactor


class ParamArgs(OneOptimizer):
    # A learning rate keeps the limits of set_lr; the app writes the server's maximum in.
    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"name": {"const": "learning_rate"}}},
            "then": {"properties": {"value": {"exclusiveMinimum": 0}}},
        }
    )

    name: Name = Field(description="`learning_rate`, or a knob the callback registered")
    value: finite_number()


class SetParam(Command):
    """Assign a settable parameter (see the run's `controls`)."""

    type: Literal["set_param"]
    args: ParamArgs


class PauseArgs(Strict):
    timeout: finite_number(exclusive_minimum=0, maximum=MAX_PAUSE) | None = Field(
        None, description="seconds after which the training resumes by itself"
    )


class Pause(Command):
    """Hold the training at the batch edge until `resume`, `stop_training` or the timeout."""

    type: Literal["pause"]
    args: PauseArgs = Field(default_factory=PauseArgs)


class Resume(Command):
    """End a pause. It cannot be scheduled: a paused training stays at its step."""

    type: Literal["resume"]
    args: NoArgs = Field(default_factory=NoArgs)
    at: None = None


class CheckpointArgs(Strict):
    name: Annotated[str, Field(pattern=CHECKPOINT_NAME)] | None = Field(
        None, description="file name without `.keras` (default `step-N`); never a path"
    )


class Checkpoint(Command):
    """`model.save` into the callback's checkpoint folder."""

    type: Literal["checkpoint"]
    args: CheckpointArgs = Field(default_factory=CheckpointArgs)


class ActionArgs(Strict):
    name: Name = Field(description="an action the callback registered")


class Action(Command):
    """Call a function the training registered, as `fn(model, step)`."""

    type: Literal["action"]
    args: ActionArgs


COMMANDS = (StopTraining, SetLr, SetParam, Pause, Resume, Checkpoint, Action)
CommandCreate = Annotated[
    StopTraining | SetLr | SetParam | Pause | Resume | Checkpoint | Action, Field(discriminator="type")
]


class Targets(BaseModel):
    """Which runs a command goes to: a list of ids, or every running run of a project."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["runs"]}, {"required": ["project"]}]})

    # Not nullable: the schema's oneOf counts a present key, so null must be refused too.
    runs: list[Annotated[str, Field(pattern=RUN_ID_PATTERN)]] = Field(None, min_length=1, max_length=1000)
    project: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)] = None

    @model_validator(mode="after")
    def _one_target(self) -> Targets:
        if (self.runs is None) == (self.project is None):
            raise ValueError("give exactly one of `runs` and `project`")
        return self


# The same commands, each with its targets, for `POST /api/v1/commands`.
_FOR_RUNS = tuple(type(f"{c.__name__}ForRuns", (c, Targets), {"__doc__": c.__doc__}) for c in COMMANDS)
MultiCommand = Annotated[Union[_FOR_RUNS], Field(discriminator="type")]  # noqa: UP007 (built from a tuple)


def stored_args(command: Command, max_lr: float) -> dict[str, Any]:
    """The args as the training gets them. A factor carries the server's limit along, since
    only the training knows the rate it multiplies."""
    args = command.args.model_dump(exclude_none=True)
    if isinstance(command, SetLr) and isinstance(command.args, LrFactor):
        args["at_most"] = max_lr
    return args


def check_limits(command: Command, max_lr: float) -> None:
    """Limits that are settings of this server, not part of the types (422 when passed)."""
    value = None
    if isinstance(command, SetLr) and isinstance(command.args, LrValue):
        value = command.args.value
    elif isinstance(command, SetParam) and command.args.name == "learning_rate":
        value = command.args.value
        if value <= 0:
            raise Invalid("learning_rate must be > 0")
    if value is not None and value > max_lr:
        raise Invalid(f"a learning rate of {value} is above this server's limit {max_lr}")


def lacking_control(command: Command, controls: dict[str, Any] | None) -> str | None:
    """Why a run whose training reported `controls` cannot take `command`: a param or an
    action they do not list (`has no param 'x'; it has: ...`), else None. A run with no
    controls (a bare MonitorClient) takes any name: its training alone knows them.
    `learning_rate` stays settable when the model has several optimizers."""
    if controls is None:
        return None
    if isinstance(command, SetParam):
        params = list(controls.get("params") or {})
        several = len(controls.get("optimizers") or []) > 1
        if command.args.name in params or (command.args.name == "learning_rate" and several):
            return None
        return _lacks("param", command.args.name, params)
    if isinstance(command, Action) and command.args.name not in (controls.get("actions") or []):
        return _lacks("action", command.args.name, controls.get("actions") or [])
    return None


def _lacks(kind: str, name: str, names: list[str], shown: int = 20) -> str:
    listed = ", ".join(clip(n) for n in names[:shown]) or "none"
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"has no {kind} {clip(name)!r}; it has: {listed}{more}"
