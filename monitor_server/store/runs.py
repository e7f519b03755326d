"""Runs: create, read, list, change, delete, and the liveness that makes a silent run
`interrupted`.

A run whose process stops talking keeps `running` (or `paused`) in the table; readers see it
as `interrupted` once `last_seen` is older than the stale timeout, and it is live again
as soon as it talks. So nothing has to sweep the table, and a run that was only cut off
from the server for a while comes back by itself.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, delete, func, insert, or_, select, update

from ..domain.errors import NotFound
from ..domain.schemas import LIVE, RunCreate, RunPatch, RunPublic, timestamp
from .sql import Fetch, insert_ignore
from .tables import chunks, commands, received, rule_firings, rule_states, rules, run_tags, runs, series, summaries


def effective_status(row: Any, stale_after: float, now: float) -> str:
    if row.status in LIVE and row.last_seen < now - stale_after:
        return "interrupted"
    return row.status


def effective_reason(row: Any, stale_after: float, now: float) -> str | None:
    """The run's reason; for a silent live run (read as interrupted), how long it was silent."""
    if effective_status(row, stale_after, now) == "interrupted" and row.status in LIVE:
        return f"no contact from the training for {_duration(now - row.last_seen)}"
    return row.reason


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


# What the list reads of a run: a config may be a megabyte, and the list never shows it.
LIST_COLUMNS = [column for column in runs.c if column.name != "config"]


def to_public(row: Any, latest: dict[str, float], tags: list[str], stale_after: float, now: float) -> RunPublic:
    """The run as the API shows it; a row read without its config (the list's) gives none."""
    return RunPublic(
        id=row.id,
        name=row.name,
        project=row.project,
        status=effective_status(row, stale_after, now),
        reason=effective_reason(row, stale_after, now),
        config=row.config if "config" in row._mapping else None,
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
        last_seen=timestamp(row.last_seen),
        latest=latest,
        controls=row.controls,
        tags=tags,
        note=row.note,
    )


def _public(conn: Connection, rows: list[Any], stale_after: float) -> list[RunPublic]:
    """`rows` as the API shows them, with their latest epoch values and tags."""
    ids = [row.id for row in rows]
    latest, tags, now = latest_epoch_values(conn, ids), tags_of(conn, ids), time.time()
    return [to_public(row, latest[row.id], tags[row.id], stale_after, now) for row in rows]


def tags_of(conn: Connection, run_ids: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {run_id: [] for run_id in run_ids}
    if run_ids:
        query = select(run_tags).where(run_tags.c.run_id.in_(run_ids)).order_by(run_tags.c.tag)
        for run_id, tag in conn.execute(query):
            out[run_id].append(tag)
    return out


def create_run(conn: Connection, body: RunCreate, now: float) -> tuple[Any, bool]:
    """The run with `body.id`, created if new; the flag says whether it was."""
    run_id = body.id or uuid.uuid4().hex
    values = {
        "id": run_id,
        "name": body.name or run_id,
        "project": body.project,
        "status": "running",
        "reason": None,
        "config": body.config,
        "created_at": now,
        "updated_at": now,
        "last_seen": now,
    }
    created = conn.execute(insert_ignore(conn, runs, ["id"]).values(values).returning(runs.c.id)).first() is not None
    return get_run_row(conn, run_id), created


# Built once: every log post runs these, and building a statement costs more than running it.
RUN = select(runs).where(runs.c.id == bindparam("run_id"))
RUN_LOCKED = RUN.with_for_update()
RUNS = select(runs).where(runs.c.id.in_(bindparam("ids", expanding=True))).order_by(runs.c.id)
RUNS_LOCKED = RUNS.with_for_update()
TOUCH = update(runs).where(runs.c.id == bindparam("run_id")).values(last_seen=bindparam("now"))


def get_run_row(conn: Connection, run_id: str, lock: bool = False) -> Any:
    """The run's row; `lock` holds it for the transaction on PostgreSQL (SQLite's
    write transactions are already exclusive)."""
    query = RUN_LOCKED if lock and conn.dialect.name == "postgresql" else RUN
    row = conn.execute(query, {"run_id": run_id}).first()
    if row is None:
        raise NotFound(f"run {run_id!r} not found")
    return row


def lock_runs(conn: Connection, fetch: Fetch, run_ids: list[str]) -> list[Any]:
    """Queue (see `sql.fetching`) the read of the rows of those of `run_ids` that exist, held
    for the transaction on PostgreSQL (locked in id order, so transactions that lock several
    runs never deadlock)."""
    query = RUNS_LOCKED if conn.dialect.name == "postgresql" else RUNS
    return fetch(query, {"ids": sorted(set(run_ids))})


def latest_epoch_values(conn: Connection, run_ids: list[str]) -> dict[str, dict[str, float]]:
    """Last value of every epoch series of each run."""
    out: dict[str, dict[str, float]] = {run_id: {} for run_id in run_ids}
    if run_ids:
        query = select(series.c.run_id, series.c.name, series.c.last_value).where(
            series.c.run_id.in_(run_ids), series.c.scope == "epoch"
        )
        for run_id, name, value in conn.execute(query):
            out[run_id][name] = float("nan") if value is None else value
    return out


def read_run(conn: Connection, run_id: str, stale_after: float) -> RunPublic:
    return _public(conn, [get_run_row(conn, run_id)], stale_after)[0]


def list_runs(
    conn: Connection,
    stale_after: float,
    project: str | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
    q: str | None = None,
    tags: Sequence[str] = (),
    sort: str = "started",
    descending: bool = True,
    ids: Sequence[str] = (),
    with_config: bool = False,
) -> tuple[list[RunPublic], int]:
    """A page of the runs that pass the filters (`ids`: only those runs), without their
    configs unless `with_config`, and how many pass them. Ties in the sort break by id, so
    pages never overlap."""
    # The status readers see (`effective_status`): a silent live run is interrupted.
    stale = and_(runs.c.status.in_(LIVE), runs.c.last_seen < time.time() - stale_after)
    shown_status = case((stale, "interrupted"), else_=runs.c.status)
    where = []
    if project is not None:
        where.append(runs.c.project == project)
    if status is not None:
        where.append(shown_status == status)
    if q:
        where.append(
            or_(
                func.lower(runs.c.name).contains(q.lower(), autoescape=True),
                func.lower(runs.c.id).contains(q.lower(), autoescape=True),
            )
        )
    for tag in tags:
        where.append(runs.c.id.in_(select(run_tags.c.run_id).where(run_tags.c.tag == tag)))
    if ids:
        where.append(runs.c.id.in_(ids))
    total = conn.execute(select(func.count()).select_from(runs).where(*where)).scalar_one()
    query = select(*(runs.c if with_config else LIST_COLUMNS)).where(*where)
    if sort.startswith("metric:"):
        value = series.c.last_value
        query = query.outerjoin(
            series, and_(series.c.run_id == runs.c.id, series.c.scope == "epoch", series.c.name == sort[7:])
        )
        # No value (no such series, or NaN) comes last in either order, then by id.
        missing = or_(value.is_(None), value == float("nan"))
        keys = [case((missing, 1), else_=0), _order(case((missing, None), else_=value), descending)]
    else:
        column = {
            "started": runs.c.created_at,
            "name": runs.c.name,
            "status": shown_status,
        }[sort]
        keys = [_order(column, descending)]
    rows = conn.execute(query.order_by(*keys, runs.c.id).limit(limit).offset(offset)).all()
    return _public(conn, rows, stale_after), total


def projects(conn: Connection) -> list[tuple[str, int]]:
    """Every project with how many runs it has, by name: the run list pages, so the
    projects it can filter on are not those of the page it shows."""
    query = select(runs.c.project, func.count()).group_by(runs.c.project).order_by(runs.c.project)
    return [(name, count) for name, count in conn.execute(query)]


def _order(column: Any, descending: bool) -> Any:
    return column.desc() if descending else column.asc()


def newly_stale(conn: Connection, stale_after: float, since: float, now: float) -> list[RunPublic]:
    """Running or paused runs whose silence passed the stale timeout between `since` and
    `now`: the ones that readers see turn `interrupted` in that time."""
    query = select(runs).where(
        runs.c.status.in_(LIVE), runs.c.last_seen >= since - stale_after, runs.c.last_seen < now - stale_after
    )
    return _public(conn, conn.execute(query).all(), stale_after)


def patch_run(conn: Connection, run_id: str, body: RunPatch, now: float) -> None:
    get_run_row(conn, run_id, lock=True)
    # An explicit null means "no change", except for `reason`, which null clears.
    values: dict[str, Any] = {
        k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None or k == "reason"
    }
    if body.controls is not None:  # whole, defaults included: the page reads every key
        values["controls"] = body.controls.model_dump(
            exclude={"optimizers"} if body.controls.optimizers is None else None
        )
    tags = values.pop("tags", None)
    if tags is not None:
        conn.execute(delete(run_tags).where(run_tags.c.run_id == run_id))
        if tags:
            conn.execute(insert(run_tags), [{"run_id": run_id, "tag": tag} for tag in tags])
    if body.status is not None:
        # A run that says it is running (or paused) is alive; any other status ends it, with its reason.
        values.setdefault("reason", None)
        if body.status in LIVE:
            values["last_seen"] = now
    values["updated_at"] = now
    conn.execute(update(runs).where(runs.c.id == run_id).values(values))


def touch(conn: Connection, run_id: str, now: float) -> None:
    """Record contact from the run's process."""
    conn.execute(TOUCH, {"run_id": run_id, "now": now})


def delete_run(conn: Connection, run_id: str) -> None:
    get_run_row(conn, run_id, lock=True)
    series_ids = select(series.c.id).where(series.c.run_id == run_id).scalar_subquery()
    conn.execute(delete(chunks).where(chunks.c.series_id.in_(series_ids)))
    conn.execute(delete(summaries).where(summaries.c.series_id.in_(series_ids)))
    conn.execute(delete(received).where(received.c.run_id == run_id))
    # Its rules' firings and states, and the rules that watched only this run.
    own_rules = select(rules.c.id).where(rules.c.run_id == run_id).scalar_subquery()
    for table in (rule_firings, rule_states):
        conn.execute(delete(table).where(or_(table.c.run_id == run_id, table.c.rule_id.in_(own_rules))))
    conn.execute(delete(rules).where(rules.c.run_id == run_id))
    conn.execute(delete(commands).where(commands.c.run_id == run_id))
    conn.execute(delete(series).where(series.c.run_id == run_id))
    conn.execute(delete(run_tags).where(run_tags.c.run_id == run_id))
    conn.execute(delete(runs).where(runs.c.id == run_id))


def was_stale(row: Any, stale_after: float, now: float) -> bool:
    """Whether this contact revives a run that readers saw as interrupted."""
    return effective_status(row, stale_after, now) == "interrupted" and row.status in LIVE
