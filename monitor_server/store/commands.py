"""Commands to a running (or paused) training: issue, deliver, acknowledge, cancel.

Delivery is at least once: every poll, and every log response, hands over all commands
the client has not acknowledged; the client applies each id at most once.

What the table says never contradicts the model. A command the training has not been
handed yet is cancelled at once. One it has (`delivered`) gets a cancel request: the
training withdraws it if it has not applied it yet and acknowledges `cancelled`, or
acknowledges what it did. An ack always records what the training did, even after the
command was cancelled. When a run ends, its unacknowledged commands are cancelled with
the reason: nothing applies them any more.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from ..config import Settings
from ..domain.commands import Command, Targets, lacking_control, stored_args
from ..domain.errors import Conflict, Invalid, NotFound
from ..domain.schemas import LIVE, CommandAck, CommandPublic, Skipped, timestamp
from .runs import effective_status, get_run_row
from .tables import commands, runs

UNACKNOWLEDGED = ("pending", "delivered")


def to_public(row: Any) -> CommandPublic:
    return CommandPublic(
        id=row.id,
        run_id=row.run_id,
        type=row.type,
        args=row.args,
        status=row.status,
        created_at=timestamp(row.created_at),
        delivered_at=timestamp(row.delivered_at),
        done_at=timestamp(row.done_at),
        message=row.message,
        step=row.step,
        at=row.at,
        issued_by=row.issued_by,
        cancel_requested_at=timestamp(row.cancel_requested_at),
    )


def insert_command(conn: Connection, run_id: str, command: Command, now: float, issued_by: str, max_lr: float) -> int:
    values = {
        "run_id": run_id,
        "type": command.type,
        "args": stored_args(command, max_lr),
        "at": None if command.at is None else command.at.model_dump(),
        "status": "pending",
        "created_at": now,
        "issued_by": issued_by,
    }
    return conn.execute(insert(commands).values(values).returning(commands.c.id)).scalar_one()


def create_command(
    conn: Connection, run_id: str, command: Command, now: float, settings: Settings, issued_by: str
) -> CommandPublic:
    run = get_run_row(conn, run_id, lock=True)
    status = effective_status(run, settings.stale_after, now)
    if status not in LIVE:
        raise Conflict(f"run {run_id!r} is {status}, not running: it cannot take commands")
    lacking = lacking_control(command, run.controls)
    if lacking is not None:
        raise Invalid(f"run {run_id!r} {lacking}")
    return get_command(conn, run_id, insert_command(conn, run_id, command, now, issued_by, settings.max_lr))


def create_for_runs(
    conn: Connection, targets: Targets, command: Command, now: float, settings: Settings, issued_by: str
) -> tuple[list[CommandPublic], list[Skipped]]:
    """One command for each running (or paused) run of `targets`; the runs skipped, and why
    (not running, or its controls lack the param or action). Each run's status is read
    again under its lock: a run that ends meanwhile is skipped."""
    if targets.runs is not None:
        candidates = sorted(set(targets.runs))
    else:
        query = select(runs.c.id).where(runs.c.project == targets.project, runs.c.status.in_(LIVE))
        candidates = sorted(conn.execute(query).scalars())
    created, skipped = [], []
    for run_id in candidates:
        query = select(runs).where(runs.c.id == run_id)
        row = conn.execute(query.with_for_update() if conn.dialect.name == "postgresql" else query).first()
        status = "not found" if row is None else effective_status(row, settings.stale_after, now)
        if status not in LIVE:
            skipped.append(Skipped(run_id=run_id, reason=status if row is None else f"the run is {status}"))
        elif (lacking := lacking_control(command, row.controls)) is not None:
            skipped.append(Skipped(run_id=run_id, reason=f"the run {lacking}"))
        else:
            new_id = insert_command(conn, run_id, command, now, issued_by, settings.max_lr)
            created.append(get_command(conn, run_id, new_id))
    return created, skipped


def _row(conn: Connection, run_id: str, command_id: int) -> Any:
    row = conn.execute(select(commands).where(commands.c.id == command_id, commands.c.run_id == run_id)).first()
    if row is None:
        raise NotFound(f"run {run_id!r} has no command {command_id}")
    return row


def get_command(conn: Connection, run_id: str, command_id: int) -> CommandPublic:
    return to_public(_row(conn, run_id, command_id))


def list_commands(conn: Connection, run_id: str) -> list[CommandPublic]:
    get_run_row(conn, run_id)
    rows = conn.execute(select(commands).where(commands.c.run_id == run_id).order_by(commands.c.id))
    return [to_public(r) for r in rows]


# Built once: every log post and poll runs them.
UNACKNOWLEDGED_OF_RUNS = (
    select(commands)
    .where(commands.c.run_id.in_(bindparam("run_ids", expanding=True)), commands.c.status.in_(UNACKNOWLEDGED))
    .order_by(commands.c.id)
)
MARK_DELIVERED = (
    update(commands)
    .where(commands.c.id.in_(bindparam("ids", expanding=True)))
    .values(status="delivered", delivered_at=bindparam("now"))
)

Delivery = tuple[list[CommandPublic], list[CommandPublic]]


def deliver_many(
    conn: Connection, run_ids: list[str], now: float, rows: list[Any] | None = None
) -> dict[str, Delivery]:
    """Per run: all its unacknowledged commands, and those of them this call delivered
    first (pending until now, marked delivered). `rows`: those commands, read already in
    this transaction with the runs locked (rows of other runs are passed over)."""
    out: dict[str, Delivery] = {run_id: ([], []) for run_id in run_ids}
    first = []
    if rows is None:
        rows = conn.execute(UNACKNOWLEDGED_OF_RUNS, {"run_ids": run_ids}).all()
    for row in rows:
        if row.run_id not in out:
            continue
        command = to_public(row)
        out[command.run_id][0].append(command)
        if command.status == "pending":
            out[command.run_id][1].append(command)
            first.append(command)
    if first:
        conn.execute(MARK_DELIVERED, {"ids": [c.id for c in first], "now": now})
        for command in first:
            command.status, command.delivered_at = "delivered", timestamp(now)
    return out


def deliver(conn: Connection, run_id: str, now: float) -> Delivery:
    return deliver_many(conn, [run_id], now)[run_id]


def unacknowledged(conn: Connection, run_id: str) -> list[CommandPublic]:
    """The run's commands the training has not acknowledged, oldest first."""
    return [to_public(r) for r in conn.execute(UNACKNOWLEDGED_OF_RUNS, {"run_ids": [run_id]})]


def ack_command(
    conn: Connection, run_id: str, command_id: int, body: CommandAck, now: float
) -> tuple[CommandPublic, bool]:
    """Record what the training did; the flag says whether this changed the command.
    A repeated ack answers the command as it is."""
    current = _row(conn, run_id, command_id)
    if current.status in ("applied", "failed") or (current.status == "cancelled" and body.status == "cancelled"):
        return to_public(current), False
    message = body.message
    if current.status == "cancelled":  # the training did it anyway: say so, and what was said before
        message = f"{body.message or body.status} (after it was cancelled: {current.message or 'cancel'})"
    conn.execute(
        update(commands)
        .where(commands.c.id == command_id)
        .values(
            status=body.status,
            message=message,
            step=body.step,
            done_at=now,
            delivered_at=current.delivered_at if current.delivered_at is not None else now,
        )
    )
    return get_command(conn, run_id, command_id), True


def cancel_command(conn: Connection, run_id: str, command_id: int, now: float) -> tuple[CommandPublic, bool]:
    """Cancel a pending command, or ask the training to withdraw a delivered one; the
    flag says whether this changed the command. The run is locked first, as a log post
    locks it before it reads the commands to hand over: a command it reads as pending is
    handed over, not cancelled meanwhile."""
    get_run_row(conn, run_id, lock=True)
    current = _row(conn, run_id, command_id)
    if current.status in ("applied", "failed"):
        raise Conflict(f"command {command_id} is already {current.status}")
    if current.status == "cancelled" or current.cancel_requested_at is not None:
        return to_public(current), False
    if current.status == "pending":
        values = {"status": "cancelled", "done_at": now, "message": "cancelled before the training received it"}
    else:
        values = {"cancel_requested_at": now}
    conn.execute(update(commands).where(commands.c.id == command_id).values(**values))
    return get_command(conn, run_id, command_id), True


def cancel_unapplied(conn: Connection, run_id: str, status: str, now: float) -> list[CommandPublic]:
    """The run ended with `status`: cancel what it never acknowledged; those commands."""
    query = select(commands).where(commands.c.run_id == run_id, commands.c.status.in_(UNACKNOWLEDGED))
    rows = list(conn.execute(query.order_by(commands.c.id)))
    for row in rows:
        when = "" if row.at is None else " at " + " ".join(f"{k} {v}" for k, v in row.at.items())
        message = f"not applied: the run ended ({status}) before the training applied it{when}"
        conn.execute(
            update(commands).where(commands.c.id == row.id).values(status="cancelled", done_at=now, message=message)
        )
    return [get_command(conn, run_id, row.id) for row in rows]
