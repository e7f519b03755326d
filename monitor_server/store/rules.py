"""Rules in the database: create, list, delete, and judge them on the points of a log post.

`judge_post` runs inside the ingest transaction, with the run's row locked: the states it
reads and writes cannot interleave with another post of the same run, whichever server
process takes it. A firing is a row with a unique key (rule, run, "run" or the step); the
transaction that inserts it is the one that issues the command, so a rule fires once
however many processes there are, and a retried post (its records counted as duplicates)
is never judged again. A rule that is not once a run fires at most `max_firings` times for
each run; past that, one row of the rule and run (key "suppressed") counts the firings it
issued nothing for, so a flapping series costs a counter, not a command and a webhook a flip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import TypeAdapter
from sqlalchemy import Connection, delete, func, select, update

from ..domain.commands import CommandCreate
from ..domain.errors import NotFound
from ..domain.rules import FiringPublic, RuleCreate, RulePublic, describe, judge
from ..domain.schemas import LIVE, CommandPublic, timestamp
from .commands import get_command, insert_command
from .sql import dialect_insert, insert_ignore
from .tables import rule_firings, rule_states, rules

COMMAND = TypeAdapter(CommandCreate)

# (scope, name) -> (steps, values) of a post's points, in step order
Points = dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]


@dataclass
class Fired:
    """What the rules did on one post: for the streams and the webhooks, after commit."""

    firings: list[FiringPublic] = field(default_factory=list)
    commands: list[CommandPublic] = field(default_factory=list)
    notify: list[FiringPublic] = field(default_factory=list)


def _rule_public(row: Any, counts: tuple[int, int]) -> RulePublic:
    return RulePublic(
        id=row.id,
        project=row.project,
        run_id=row.run_id,
        when=row.when,
        then=row.then,
        notify=row.notify,
        once_per_run=row.once_per_run,
        max_firings=row.max_firings,
        created_at=timestamp(row.created_at),
        description=describe(row.when, row.then, row.notify),
        firings=counts[0],
        suppressed=counts[1],
        notified_at=timestamp(row.notified_at),
        notify_error=row.notify_error,
        notify_error_at=timestamp(row.notify_error_at),
    )


def _firing_public(row: Any, rule: Any) -> FiringPublic:
    return FiringPublic(
        id=row.id,
        rule_id=row.rule_id,
        run_id=row.run_id,
        step=row.step,
        value=math.nan if row.value is None else row.value,  # SQLite keeps NaN as NULL
        command_id=row.command_id,
        message=_suppressed_message(row.suppressed, rule.max_firings) if row.suppressed else row.message,
        suppressed=row.suppressed,
        created_at=timestamp(row.created_at),
        scope=rule.when["scope"],
        name=rule.when["name"],
        description=describe(rule.when, rule.then, rule.notify),
    )


def _suppressed_message(count: int, max_firings: int) -> str:
    return f"{count} more firing{'' if count == 1 else 's'} suppressed: max_firings is {max_firings} a run"


def create_rule(conn: Connection, body: RuleCreate, now: float) -> RulePublic:
    values = body.model_dump(mode="json", exclude_none=True, exclude={"then"})
    values["then"] = None if body.then is None else body.then.model_dump(mode="json", exclude_none=True)
    rule_id = conn.execute(rules.insert().values(created_at=now, **values).returning(rules.c.id)).scalar_one()
    return get_rule(conn, rule_id)


def _counts(conn: Connection, rule_ids: list[int] | None = None) -> dict[int, tuple[int, int]]:
    """Each rule's firings and the firings it suppressed."""
    fired = func.count().filter(rule_firings.c.suppressed == 0)
    query = select(rule_firings.c.rule_id, fired, func.sum(rule_firings.c.suppressed)).group_by(rule_firings.c.rule_id)
    if rule_ids is not None:
        query = query.where(rule_firings.c.rule_id.in_(rule_ids))
    return {rule_id: (fired, suppressed) for rule_id, fired, suppressed in conn.execute(query)}


def _row(conn: Connection, rule_id: int) -> Any:
    row = conn.execute(select(rules).where(rules.c.id == rule_id)).first()
    if row is None:
        raise NotFound(f"no rule {rule_id}")
    return row


def get_rule(conn: Connection, rule_id: int) -> RulePublic:
    return _rule_public(_row(conn, rule_id), _counts(conn, [rule_id]).get(rule_id, (0, 0)))


def list_rules(conn: Connection) -> list[RulePublic]:
    counts = _counts(conn)
    return [_rule_public(r, counts.get(r.id, (0, 0))) for r in conn.execute(select(rules).order_by(rules.c.id))]


def delete_rule(conn: Connection, rule_id: int) -> None:
    _row(conn, rule_id)
    conn.execute(delete(rule_firings).where(rule_firings.c.rule_id == rule_id))
    conn.execute(delete(rule_states).where(rule_states.c.rule_id == rule_id))
    conn.execute(delete(rules).where(rules.c.id == rule_id))


def list_firings(conn: Connection, *, rule_id: int | None = None, run_id: str | None = None) -> list[FiringPublic]:
    query = select(rule_firings, rules.c.when, rules.c.then, rules.c.notify, rules.c.max_firings).join(
        rules, rules.c.id == rule_firings.c.rule_id
    )
    if rule_id is not None:
        _row(conn, rule_id)
        query = query.where(rule_firings.c.rule_id == rule_id)
    if run_id is not None:
        query = query.where(rule_firings.c.run_id == run_id)
    rows = conn.execute(query.order_by(rule_firings.c.id)).all()
    return [_firing_public(r, r) for r in rows]


def record_notification(conn: Connection, rule_id: int, now: float, error: str | None) -> None:
    """A webhook went through (`error` None) or finally failed: keep it on the rule."""
    if error is None:
        values = {"notified_at": now, "notify_error": None}
    else:
        values = {"notify_error": error[:2000], "notify_error_at": now}
    conn.execute(update(rules).where(rules.c.id == rule_id).values(**values))


def watched_series(watched: list[Any]) -> set[tuple[str, str]]:
    return {(r.when["scope"], r.when["name"]) for r in watched}


def judge_post(conn: Connection, run: Any, watched: list[Any], points: Points, now: float, max_lr: float) -> Fired:
    """Judge the rules `watched` (of `run`) on a post's points; store states and firings,
    issue commands."""
    fired = Fired()
    candidates = [r for r in watched if (r.when["scope"], r.when["name"]) in points]
    if not candidates:
        return fired
    query = select(rule_states).where(
        rule_states.c.run_id == run.id, rule_states.c.rule_id.in_([r.id for r in candidates])
    )
    states = {s.rule_id: s.state for s in conn.execute(query)}
    changed, firing = [], []
    for rule in candidates:
        steps, values = points[(rule.when["scope"], rule.when["name"])]
        old = states.get(rule.id, {})
        new, at = judge(rule, old, values)
        if new != old:
            changed.append({"rule_id": rule.id, "run_id": run.id, "state": new})
        if at:
            firing.append((rule, steps[at], values[at]))
    left = _firings_left(conn, run.id, [rule for rule, _, _ in firing if not rule.once_per_run])
    for rule, steps, values in firing:
        room = left.get(rule.id, len(steps))
        for i, (step, value) in enumerate(zip(steps.tolist(), values.tolist())):
            if room <= 0:
                _suppress(conn, rule, run, step, value, len(steps) - i, now, fired)
                break
            room -= _fire(conn, rule, run, step, value, now, max_lr, fired)
    if changed:
        stmt = dialect_insert(conn, rule_states)
        conn.execute(
            stmt.on_conflict_do_update(index_elements=["rule_id", "run_id"], set_={"state": stmt.excluded.state}),
            changed,
        )
    return fired


def _firings_left(conn: Connection, run_id: str, limited: list[Any]) -> dict[int, int]:
    """How many more times each rule of `limited` may fire for the run: read only when one
    fires, under the run's lock."""
    if not limited:
        return {}
    query = (
        select(rule_firings.c.rule_id, func.count())
        .where(
            rule_firings.c.run_id == run_id,
            rule_firings.c.rule_id.in_([r.id for r in limited]),
            rule_firings.c.suppressed == 0,
        )
        .group_by(rule_firings.c.rule_id)
    )
    done = dict(conn.execute(query).all())
    return {r.id: r.max_firings - done.get(r.id, 0) for r in limited}


def _fire(
    conn: Connection, rule: Any, run: Any, step: int, value: float, now: float, max_lr: float, fired: Fired
) -> bool:
    """Store a firing and issue its command; False when it was stored before."""
    key = "run" if rule.once_per_run else f"step:{step}"
    row = {"rule_id": rule.id, "run_id": run.id, "key": key, "step": step, "value": value, "created_at": now}
    firing_id = conn.execute(
        insert_ignore(conn, rule_firings, ["rule_id", "run_id", "key"]).values(row).returning(rule_firings.c.id)
    ).scalar_one_or_none()
    if firing_id is None:
        return False  # fired here before: another post or another process has it
    values: dict[str, Any] = {}
    if rule.then is not None and run.status in LIVE:
        command = COMMAND.validate_python(rule.then)
        values["command_id"] = insert_command(conn, run.id, command, now, f"rule:{rule.id}", max_lr)
        fired.commands.append(get_command(conn, run.id, values["command_id"]))
    elif rule.then is not None:
        values["message"] = f"no command issued: the run is {run.status}"
    if values:
        conn.execute(update(rule_firings).where(rule_firings.c.id == firing_id).values(values))
    firing = _firing_public(conn.execute(select(rule_firings).where(rule_firings.c.id == firing_id)).one(), rule)
    fired.firings.append(firing)
    if rule.notify:
        fired.notify.append(firing)
    return True


def _suppress(conn: Connection, rule: Any, run: Any, step: int, value: float, count: int, now: float, fired: Fired):
    """Count `count` firings past `max_firings`, from `step` on, on the rule and run's one
    "suppressed" row (its step: the first suppressed): no command, no webhook; the streams
    get the row, so the pages show the count."""
    row = {"rule_id": rule.id, "run_id": run.id, "key": "suppressed", "step": step, "value": value}
    stmt = dialect_insert(conn, rule_firings).values(**row, created_at=now, suppressed=count)
    stmt = stmt.on_conflict_do_update(
        index_elements=["rule_id", "run_id", "key"], set_={"suppressed": rule_firings.c.suppressed + count}
    )
    fired.firings.append(_firing_public(conn.execute(stmt.returning(*rule_firings.c)).one(), rule))
