"""Rules that act: what a rule watches (`when`), what it does, and how a series is judged.

A rule watches one series of every run in its scope and is judged on the points of each
log post as they are stored, in step order. What it must remember of a run between posts
is a few numbers (`state`), so a post costs one read of the states of its run, never a
query per point. Each operator is one function in `OPERATORS`:

- `nan`, `above`, `below` fire when their condition turns true: at the first point that
  meets it after one that did not (or the first point seen), not at every point after.
- `no_improvement` fires when `patience` points in a row were not better than the best
  so far (strictly lower for `min`, higher for `max`), then counts again from zero, as
  ReduceLROnPlateau does.

A rule `once_per_run` fires at most once for each run and is not judged after that; any
other fires at most `max_firings` times for each run, and the firings past that are counted,
not issued (`store.rules`): a series that flaps issues no flood of commands.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from .commands import CommandCreate, finite_number
from .schemas import Name, OutFloat, RunId, Scope, Strict, json_int

State = dict[str, Any]
MAX_FIRINGS = 1000  # a rule's commands to one run: more than any plan of steps needs


class Watch(Strict):
    scope: Scope = Field("epoch", description="the series' scope: `batch`, `epoch`, `eval` or `system`")
    name: Name = Field(description="the series, e.g. `val_loss`")


class Nan(Watch):
    """The value is NaN, +Infinity or -Infinity."""

    op: Literal["nan"]


class Above(Watch):
    """The value is greater than `value`."""

    op: Literal["above"]
    value: finite_number()


class Below(Watch):
    """The value is less than `value`."""

    op: Literal["below"]
    value: finite_number()


class NoImprovement(Watch):
    """`patience` points in a row without a better value than the best so far."""

    op: Literal["no_improvement"]
    patience: json_int(1, 1_000_000)
    mode: Literal["min", "max"] = Field("min", description="`min`: lower is better (a loss); `max`: higher")


When = Annotated[Nan | Above | Below | NoImprovement, Field(discriminator="op")]


class RuleCreate(Strict):
    """A rule: for the runs in scope, when the series meets `when`, issue `then` and/or
    notify the operator's webhook."""

    # What the validator below checks, in the published schema too. Absent, not null: the
    # schema counts a key that is present.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [{"required": ["then"]}, {"required": ["notify"], "properties": {"notify": {"const": True}}}],
            "not": {"required": ["project", "run_id"]},
        }
    )

    project: Name = Field(None, description="only the runs of this project")
    run_id: RunId = Field(None, description="only this run (neither: every run)")
    when: When
    then: CommandCreate = Field(None, description="a command issued to the run, with `issued_by: rule:<id>`")
    notify: StrictBool = Field(False, description="POST the firing as JSON to the server's FITWATCH_WEBHOOK_URL")
    once_per_run: StrictBool = Field(True, description="fire at most once for each run")
    max_firings: json_int(1, MAX_FIRINGS) = Field(
        100,
        description="with `once_per_run: false`, fire at most this many times for each run; "
        "later firings issue nothing and are counted as `suppressed`",
    )

    @model_validator(mode="after")
    def _acts(self) -> RuleCreate:
        if self.then is None and not self.notify:
            raise ValueError("a rule needs `then` (a command), `notify: true`, or both")
        if self.project is not None and self.run_id is not None:
            raise ValueError("give at most one of `project` and `run_id`")
        return self


class RulePublic(BaseModel):
    id: int
    project: str | None
    run_id: str | None
    when: dict[str, Any]
    then: dict[str, Any] | None
    notify: bool
    once_per_run: bool
    max_firings: int = Field(description="how many times it may fire for each run, when not once")
    created_at: datetime
    description: str = Field(description="the rule in words")
    firings: int = Field(description="how many times it fired")
    suppressed: int = Field(description="how many firings past `max_firings` it issued nothing for")
    notified_at: datetime | None = Field(description="when a webhook last went through")
    notify_error: str | None = Field(description="why the last webhook failed, when it failed")
    notify_error_at: datetime | None


class FiringPublic(BaseModel):
    id: int
    rule_id: int
    run_id: str
    step: int
    value: OutFloat | None
    command_id: int | None
    message: str | None = Field(description="why no command was issued, if none was")
    suppressed: int = Field(
        description="0 for a firing; else this is the run's one row counting the firings past `max_firings`, "
        "from `step` on"
    )
    created_at: datetime
    scope: str
    name: str
    description: str


def describe(when: dict[str, Any], then: dict[str, Any] | None, notify: bool) -> str:
    """A rule in words, for pages and webhooks: `val_loss (epoch) has not improved for 3
    points -> set_lr factor 0.5, notify`."""
    series = f"{when['name']} ({when['scope']})"
    condition = {
        "nan": "is NaN or infinite",
        "above": f"is above {when.get('value')}",
        "below": f"is below {when.get('value')}",
        "no_improvement": f"has not improved for {when.get('patience')} points ({when.get('mode', 'min')})",
    }[when["op"]]
    acts = []
    if then is not None:
        args = " ".join(f"{k} {v}" for k, v in then.get("args", {}).items())
        acts.append(f"{then['type']} {args}".strip())
    if notify:
        acts.append("notify")
    return f"{series} {condition} -> {', '.join(acts)}"


def _turns_true(condition: Callable[[dict[str, Any], np.ndarray], np.ndarray]):
    """An operator that fires where `condition` turns true."""

    def judge(when: dict[str, Any], state: State, values: np.ndarray) -> tuple[State, list[int]]:
        met = condition(when, values)
        before = np.concatenate(([state.get("met", False)], met[:-1]))
        return {"met": bool(met[-1])}, np.flatnonzero(met & ~before).tolist()

    return judge


def _no_improvement(when: dict[str, Any], state: State, values: np.ndarray) -> tuple[State, list[int]]:
    # As numbers to minimize; NaN and ±Infinity never improve.
    sign = 1.0 if when.get("mode", "min") == "min" else -1.0
    v = np.where(np.isfinite(values), sign * values, np.inf)
    best = np.inf if state.get("best") is None else sign * state["best"]
    running = np.minimum.accumulate(np.concatenate(([best], v)))
    improved = v < running[:-1]
    at = np.arange(len(v))
    last = np.maximum.accumulate(np.where(improved, at, -1))  # the last improvement so far
    # Points since the best, counted on from the state before this post's first improvement;
    # firing starts the count again, so it fires at each multiple of patience.
    since = np.where(last >= 0, at - last, state.get("since", 0) + at + 1)
    patience = when["patience"]
    fired = np.flatnonzero((since > 0) & (since % patience == 0)).tolist()
    best = float(running[-1])
    return {"best": None if math.isinf(best) else sign * best, "since": int(since[-1] % patience)}, fired


# op -> judge(when, state, values in step order) -> (new state, indexes of the points it fires at)
OPERATORS = {
    "nan": _turns_true(lambda when, v: ~np.isfinite(v)),
    "above": _turns_true(lambda when, v: v > when["value"]),
    "below": _turns_true(lambda when, v: v < when["value"]),
    "no_improvement": _no_improvement,
}


def judge(rule: Any, state: State, values: np.ndarray) -> tuple[State, list[int]]:
    """The rule's new state for this run and where it fires among `values`."""
    if state.get("done"):
        return state, []
    state, fired = OPERATORS[rule.when["op"]](rule.when, state, values)
    if rule.once_per_run and fired:
        return {"done": True}, fired[:1]
    return state, fired
