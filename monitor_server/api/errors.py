"""The one error shape, `{"detail": ...}`, that every failure answers with."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from ..domain.errors import ECHO_MAX, ApiError, clip

# uvicorn's own log of the server: where its lines about connections go, at its level.
server_log = logging.getLogger("uvicorn.error")


def validation_detail(errors: list[dict[str, Any]], prefix: tuple = ()) -> list[dict[str, Any]]:
    """Validation errors without the echoed input, which may hold NaN or huge blobs; what
    they still repeat of it (a key in `loc`, a value in `msg`) is clipped."""
    return [
        {
            "loc": [clip(part) if isinstance(part, str) else part for part in (*prefix, *e.get("loc", ()))],
            "msg": _clipped_msg(str(e.get("msg", "")), e.get("ctx") or {}),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]


def _clipped_msg(msg: str, ctx: dict[str, Any]) -> str:
    """`msg` with each long value it was formatted from (in `ctx`) clipped."""
    for value in ctx.values():
        text = str(value)
        if len(text) > ECHO_MAX:
            msg = msg.replace(text, clip(text))
    return msg


def error_response(status: int, detail: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.detail)


async def _request_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "request body is not valid JSON")
    return error_response(422, validation_detail(errors))


async def _validation(_request: Request, exc: ValidationError) -> JSONResponse:
    if any(e.get("type") == "json_invalid" for e in exc.errors()):
        return error_response(400, "request body is not valid JSON")
    # Raised where a handler validates the body itself.
    return error_response(422, validation_detail(exc.errors(), ("body",)))


async def _conflict(_request: Request, _exc: IntegrityError) -> JSONResponse:
    # A constraint caught what validation let through: the stored data stays as it was.
    return error_response(409, "the request conflicts with stored data")


async def _unstorable(_request: Request, _exc: DataError) -> JSONResponse:
    # Text the database cannot hold (PostgreSQL refuses NUL), a number out of its range.
    return error_response(422, "a value in the request cannot be stored or searched for")


async def _database_down(_request: Request, _exc: Exception) -> JSONResponse:
    # The database went away (restart, network): a client should retry, not give up.
    return JSONResponse({"detail": "database unavailable, retry"}, status_code=503, headers={"Retry-After": "1"})


async def _client_gone(request: Request, _exc: ClientDisconnect) -> JSONResponse:
    # A training killed in the middle of a post, a dropped connection: nothing was stored,
    # no one reads the answer, and it is no fault of the server's. One line, no traceback.
    client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
    server_log.info("%s left before the end of its request body: %s %s", client, request.method, request.url.path)
    return error_response(400, "the request body ended early")


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code != 405:
        return await http_exception_handler(request, exc)
    # Starlette names only the first route's methods; a path may have several routes.
    allowed = set()
    for route in request.app.router.routes:
        if getattr(route, "methods", None) and route.matches(request.scope)[0] is not Match.NONE:
            allowed |= route.methods
    response = error_response(405, "method not allowed")
    response.headers["Allow"] = ", ".join(sorted(allowed))
    return response


def install(app: FastAPI) -> None:
    """Register the handlers that turn every client error into `{"detail": ...}`."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(ValidationError, _validation)
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(InterfaceError, _database_down)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(IntegrityError, _conflict)
    app.add_exception_handler(DataError, _unstorable)
    app.add_exception_handler(ClientDisconnect, _client_gone)
