"""Commands: issue (to one run, or to several at once), list or long-poll, acknowledge,
cancel."""

from __future__ import annotations

import time
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from client_callbacks.wire import MAX_INT32

from ...domain.commands import CommandCreate, MultiCommand, check_limits
from ...domain.schemas import CommandAck, CommandPublic, CommandsCreated
from ...infra.bus import command_topic
from ...infra.db import reading, writing
from ...services import announce
from ...store import commands as store
from ...store.runs import get_run_row, touch
from ..access import TRAINING_HEADER, Controller, Ingester, Reader, Right, Role, authorize
from ..deps import BusDep, EngineDep, RunIdPath, SettingsDep

router = APIRouter(prefix="/api/v1/runs/{run_id}/commands", tags=["commands"])
several = APIRouter(prefix="/api/v1/commands", tags=["commands"])

CommandId = Annotated[int, Path(ge=1, le=MAX_INT32)]

# In the OpenAPI document only: `access.authorize` reads the header, not the handler.
TRAINING_PARAM = {
    "parameters": [
        {
            "name": TRAINING_HEADER,
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "any value: marks the training on an open server (needed with `status=pending`)",
        }
    ]
}


@router.post("", response_model=CommandPublic, status_code=201)
def create_command(
    run_id: RunIdPath, body: CommandCreate, engine: EngineDep, settings: SettingsDep, bus: BusDep, role: Role
) -> CommandPublic:
    """Send a command to a running (or paused) training; with `at`, for a given step or epoch."""
    check_limits(body, settings.max_lr)
    with writing(engine) as conn:
        command = store.create_command(conn, run_id, body, time.time(), settings, role)
    announce.command(bus, command, wake=True)
    return command


@several.post("", response_model=CommandsCreated, status_code=201, dependencies=[Controller])
def create_commands(
    body: MultiCommand, engine: EngineDep, settings: SettingsDep, bus: BusDep, role: Role
) -> CommandsCreated:
    """Send one command to each running run of `runs` (ids) or of `project`; the others are
    listed as skipped, with the reason."""
    check_limits(body, settings.max_lr)
    with writing(engine) as conn:
        created, skipped = store.create_for_runs(conn, body, body, time.time(), settings, role)
    for command in created:
        announce.command(bus, command, wake=True)
    return CommandsCreated(commands=created, skipped=skipped)


def _poll(engine, run_id: str, touch_after: float) -> tuple[list[CommandPublic], list[CommandPublic]]:
    """(unacknowledged commands, those delivered now). A poll reads first and writes only
    when it has commands to hand over or the run's last contact is `touch_after` s old:
    the many waiting trainings do not queue for the write lock behind log posts."""
    now = time.time()
    with reading(engine) as conn:
        run = get_run_row(conn, run_id)
        commands = store.unacknowledged(conn, run_id)
    if now - run.last_seen < touch_after and all(c.status != "pending" for c in commands):
        return commands, []
    with writing(engine) as conn:
        get_run_row(conn, run_id, lock=True)
        touch(conn, run_id, now)
        return store.deliver(conn, run_id, now)


@router.get("", response_model=list[CommandPublic], dependencies=[Reader], openapi_extra=TRAINING_PARAM)
async def list_commands(
    request: Request,
    run_id: RunIdPath,
    engine: EngineDep,
    settings: SettingsDep,
    bus: BusDep,
    status: Literal["pending"] | None = None,
    wait: Annotated[float, Query(ge=0, le=30)] = 0,
) -> list[CommandPublic]:
    """All commands of the run; with `status=pending`, the ones not yet acknowledged,
    handed to the caller as the training (marked delivered), waiting up to `wait` s for a
    new one or a cancel. A waiting poll counts as contact: a paused training stays alive.
    Taking them needs the ingest token, or on an open server the `X-Fitwatch-Client`
    header; without it, 403 and no command changes (a page on another site can make a
    browser send a plain GET)."""
    if status is None:

        def read() -> list[CommandPublic]:
            with reading(engine) as conn:
                return store.list_commands(conn, run_id)

        return await run_in_threadpool(read)
    authorize(request, Right.INGEST)  # taking pending commands is the training's part
    deadline = anyio.current_time() + min(wait, settings.max_wait)
    heartbeat = settings.stale_after / 3
    with bus.subscribe(command_topic(run_id)) as woken:
        woke = False
        while True:
            commands, delivered = await run_in_threadpool(_poll, engine, run_id, heartbeat / 2)
            for command in delivered:
                announce.command(bus, command)
            remaining = deadline - anyio.current_time()
            # Commands the caller holds already (a scheduled one) do not end the wait: only a
            # new one, a cancel asked (also one asked between two polls), or the deadline do.
            cancel = any(c.cancel_requested_at is not None for c in commands)
            if delivered or woke or cancel or remaining <= 0 or woken.closed:
                return commands
            woke = await woken.get(min(remaining, heartbeat)) is not None


@router.post("/{command_id}/ack", response_model=CommandPublic, dependencies=[Ingester])
def ack_command(
    run_id: RunIdPath, command_id: CommandId, body: CommandAck, engine: EngineDep, bus: BusDep
) -> CommandPublic:
    """The training reports a command `applied`, `failed` or `cancelled` (withdrawn
    unapplied); repeating it changes nothing."""
    now = time.time()
    with writing(engine) as conn:
        touch(conn, run_id, now)
        command, changed = store.ack_command(conn, run_id, command_id, body, now)
    if changed:
        announce.command(bus, command)
    return command


@router.post(
    "/{command_id}/cancel",
    response_model=CommandPublic,
    dependencies=[Controller],
    responses={
        202: {"model": CommandPublic, "description": "the training has it: cancel asked (`cancel_requested_at`)"}
    },
)
def cancel_command(
    run_id: RunIdPath, command_id: CommandId, engine: EngineDep, bus: BusDep, response: Response
) -> CommandPublic:
    """Cancel a command the training has not received (200, `cancelled`). One it has
    received gets a cancel request (202): the training withdraws it unless it has applied
    it already, and its ack says which. 409 once it is applied or failed."""
    with writing(engine) as conn:
        command, changed = store.cancel_command(conn, run_id, command_id, time.time())
    if changed:
        announce.command(bus, command, wake=command.status != "cancelled")
    if command.status != "cancelled":
        response.status_code = 202
    return command
