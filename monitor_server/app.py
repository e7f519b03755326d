"""The application factory: `create_app(settings)` builds one server on one database."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy.engine import make_url

from . import __version__
from .api import errors
from .api.access import SECURITY_SCHEMES, AccessLog, Guard, security
from .api.limits import BodyLimit
from .api.query import given_once
from .api.routes import commands, compat, events, export, health, logs, pages, rules, runs, series, series_across
from .api.routes.compat import EpochLogs
from .config import Settings, get_settings
from .domain.schemas import MAX_INT64, ErrorBody, LogBatch
from .infra.bus import EventBus
from .infra.db import make_engine
from .infra.shutdown import close_streams_on_stop
from .infra.webhooks import Webhooks
from .infra.writer import LogWriter
from .migrations import upgrade
from .services import stale
from .services.ingest import Ingest

# Errors are JSON on every route, event streams included, whatever the route's own answer is.
ERROR_RESPONSES = {
    status: {
        "description": text,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    for status, text in (
        (400, "malformed JSON, or an unknown Host"),
        (401, "missing or wrong bearer token"),
        (403, "the token lacks the right, or the request comes from another site"),
        (404, "no such run, command or rule"),
        (409, "the run or command is not in a state that allows it"),
        (413, "body over the limit, or a run's config over its limit"),
        (415, "a write that is not JSON"),
        (422, "invalid input"),
        (503, "the database is unreachable; retry"),
    )
}


# How long a thread may hold the interpreter lock while another waits for it (Python's
# default: 5 ms). The log writer gives the lock up at every database call and then waits
# for it behind the event loop and the request threads; at 5 ms a turn, a batch of a few
# posts took 12 ms. Measured with bench/load.py (100 runs): log post p99 684 ms at 5 ms,
# 449 ms at 0.5 ms.
SWITCH_INTERVAL_S = 0.0005


@functools.cache
def _out_of_collector_sight() -> None:
    """Once a process: what exists when the first app has started (modules, tables, built
    statements, the engine) lives as long as the process, so the cycle collector stops
    scanning it. Its full collections, every few seconds under load with every thread
    stopped, took 115-150 ms each (bench/load.py, 100 runs), 25-45 ms once frozen."""
    gc.collect()  # what startup left for the collector goes first, not frozen with the rest
    gc.freeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    """A server for `settings` (default: the `FITWATCH_*` environment). The database is
    opened and migrated when the app starts, not when it is built."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        engine = make_engine(settings.database_url, settings.pool_size)
        await run_in_threadpool(upgrade, engine)
        app.state.engine = engine
        await run_in_threadpool(app.state.bus.start, engine)
        app.state.webhooks.start(engine)
        app.state.writer = LogWriter(engine, settings)
        app.state.writer.start()
        app.state.ingest = Ingest(engine, settings, app.state.bus, app.state.webhooks, app.state.writer)
        _out_of_collector_sight()
        watcher = asyncio.create_task(stale.watch(engine, app.state.bus, settings.stale_after))
        restore_signals = close_streams_on_stop(app.state.bus)
        try:
            yield
        finally:
            restore_signals()
            watcher.cancel()
            await run_in_threadpool(app.state.writer.stop)
            await run_in_threadpool(app.state.webhooks.stop)
            app.state.bus.stop()
            engine.dispose()

    app = FastAPI(
        title="fitwatch",
        version=__version__,
        summary="Live training monitor for Keras: runs, metrics and remote control.",
        lifespan=lifespan,
        dependencies=[Depends(given_once)],
    )
    app.state.settings = settings
    # Several server processes share live events through PostgreSQL; one SQLite server
    # keeps them in process.
    if make_url(settings.database_url).get_backend_name() == "postgresql":
        from .infra.pgbus import PostgresBus  # psycopg comes with the `postgres` extra

        app.state.bus = PostgresBus(settings.database_url, settings.stale_after)
    else:
        app.state.bus = EventBus()
    app.state.webhooks = Webhooks(settings.webhook_url)
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Guard, settings=settings)
    access_log = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessLog) for f in access_log.filters):
        access_log.addFilter(AccessLog())
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    for router in (
        health.router,
        runs.router,
        runs.projects,
        logs.router,
        series.router,
        series_across.router,
        commands.router,
        commands.several,
        rules.router,
        rules.for_run,
        events.router,
        export.router,
        compat.router,
    ):
        app.include_router(router, responses=ERROR_RESPONSES)
    app.include_router(pages.router)
    app.mount("/static", pages.static, name="static")
    pages.install_not_found(app)
    app.openapi = lambda: _openapi(app)
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated schema, plus the bodies that routes parse themselves and the limits
    that are this server's settings: exactly what the server accepts."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (LogBatch, EpochLogs, ErrorBody):
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
        components["LogBatch"]["properties"]["records"]["maxItems"] = app.state.settings.max_records
        max_lr = app.state.settings.max_lr
        components["LrValue"]["properties"]["value"]["maximum"] = max_lr
        components["ParamArgs"]["then"]["properties"]["value"]["maximum"] = max_lr
        if app.state.settings.webhook_url is None:
            components["RuleCreate"]["properties"]["notify"]["const"] = False  # nothing to notify
        _add_security(schema, app)
        app.openapi_schema = _exact_integer_bounds(schema)
    return app.openapi_schema


def _add_security(schema: dict[str, Any], app: FastAPI) -> None:
    """Which operations take a token, and which need one, as this server's settings say."""
    settings = app.state.settings
    if settings.token is None:
        return  # an open server: no token counts
    schema["components"]["securitySchemes"] = SECURITY_SCHEMES
    for route in iter_route_contexts(app.routes):  # as get_openapi walks them
        if isinstance(route.original_route, APIRoute) and route.include_in_schema:
            for method in route.methods:
                requirement = security(settings, route.dependant, method)
                if requirement is not None:
                    schema["paths"][route.path_format][method.lower()]["security"] = requirement


def _exact_integer_bounds(node: Any) -> Any:
    """FastAPI's OpenAPI model holds bounds as floats, and 2**63 - 1 does not survive
    that; put the exact integers back wherever the schema is of integers."""
    if isinstance(node, list):
        return [_exact_integer_bounds(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _exact_integer_bounds(v) for k, v in node.items()}
    if out.get("type") == "integer":
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if isinstance(out.get(key), float):
                out[key] = MAX_INT64 if out[key] >= MAX_INT64 else int(out[key])
    return out
