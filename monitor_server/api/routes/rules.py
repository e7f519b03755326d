"""Rules: the server watches series and steers or notifies on its own. Writing rules
takes the admin token; reading them is a read."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Response
from fastapi.concurrency import run_in_threadpool

from client_callbacks.wire import MAX_INT32

from ...domain.commands import check_limits
from ...domain.errors import Invalid
from ...domain.rules import FiringPublic, RuleCreate, RulePublic
from ...infra.db import reading, writing
from ...store import rules as store
from ...store.runs import get_run_row
from ..access import Controller, Reader
from ..deps import EngineDep, RunIdPath, SettingsDep

router = APIRouter(prefix="/api/v1/rules", tags=["rules"])
for_run = APIRouter(prefix="/api/v1/runs/{run_id}/firings", tags=["rules"])

RuleId = Annotated[int, Path(ge=1, le=MAX_INT32)]


@router.post("", response_model=RulePublic, status_code=201, dependencies=[Controller])
def create_rule(body: RuleCreate, engine: EngineDep, settings: SettingsDep) -> RulePublic:
    """Watch a series of one run, of a project's runs, or of every run; when `when` holds,
    issue `then` to the run and/or notify the server's webhook. A rule is judged on the
    points stored after it is created."""
    if body.notify and settings.webhook_url is None:
        raise Invalid("notify: this server has no FITWATCH_WEBHOOK_URL to notify")
    if body.then is not None:
        try:
            check_limits(body.then, settings.max_lr)
        except Invalid as exc:
            raise Invalid(f"then: {exc.detail}") from None
    with writing(engine) as conn:
        return store.create_rule(conn, body, time.time())


@router.get("", response_model=list[RulePublic], dependencies=[Reader])
def list_rules(engine: EngineDep) -> list[RulePublic]:
    with reading(engine) as conn:
        return store.list_rules(conn)


@router.get("/{rule_id}", response_model=RulePublic, dependencies=[Reader])
def get_rule(rule_id: RuleId, engine: EngineDep) -> RulePublic:
    with reading(engine) as conn:
        return store.get_rule(conn, rule_id)


@router.delete("/{rule_id}", status_code=204, dependencies=[Controller])
def delete_rule(rule_id: RuleId, engine: EngineDep) -> Response:
    """Delete the rule and its firings; the commands it issued stay in their runs' history."""
    with writing(engine) as conn:
        store.delete_rule(conn, rule_id)
    return Response(status_code=204)


@router.get("/{rule_id}/firings", response_model=list[FiringPublic], dependencies=[Reader])
def rule_firings(rule_id: RuleId, engine: EngineDep) -> list[FiringPublic]:
    with reading(engine) as conn:
        return store.list_firings(conn, rule_id=rule_id)


@for_run.get("", response_model=list[FiringPublic], dependencies=[Reader])
async def run_firings(run_id: RunIdPath, engine: EngineDep) -> list[FiringPublic]:
    """Every firing of a rule for this run, oldest first."""

    def read() -> list[FiringPublic]:
        with reading(engine) as conn:
            get_run_row(conn, run_id)
            return store.list_firings(conn, run_id=run_id)

    return await run_in_threadpool(read)
