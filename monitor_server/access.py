"""Who may do what: scoped bearer tokens, and the checks that keep a browser on another
site (or a DNS-rebound name) from driving the control channel.

- `FITWATCH_TOKEN` grants everything. `FITWATCH_INGEST_TOKEN` lets a training create and
  end runs, log, poll and acknowledge commands, but not issue or cancel commands nor
  delete runs. `FITWATCH_READ_TOKEN` reads. Reads are open unless
  `FITWATCH_PROTECT_READS=true`. No token at all: everything is open (loopback use).
- Missing or wrong token: 401. A token without the right: 403. Tokens are compared in
  constant time and never logged; a command records the role that issued it.
- Writes with a body must be `application/json` (the RemoteMonitor route may also send a
  form): a page on another site cannot send that without a CORS preflight, which is
  refused unless `FITWATCH_CORS_ORIGINS` lists the site; and a browser write marked
  `Sec-Fetch-Site: cross-site` is refused outright. No cookie carries authority.
- The Host header must be one the server answers to: loopback names when it listens on
  loopback, so a hostile page cannot reach it through a DNS name that resolves to
  127.0.0.1.
"""

from __future__ import annotations

import hmac
import logging
import re
from enum import Enum
from typing import Annotated

from fastapi import Depends, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from .config import Settings
from .errors import Forbidden, Unauthorized, UnsupportedMediaType, error_response

LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "::1", "[::1]"]
TOKEN_IN_URL = re.compile(r"(access_token)=[^&\s]*")
FORM_ROUTES = ("/publish/",)


class Right(Enum):
    READ = "read"
    INGEST = "ingest"
    CONTROL = "control"


# Which rights each role has.
ROLES = {
    "admin": {Right.READ, Right.INGEST, Right.CONTROL},
    "ingest": {Right.READ, Right.INGEST},
    "read": {Right.READ},
}


def _given_token(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.method == "GET":
        # EventSource cannot send headers: streams and reads may carry the token in the URL.
        return request.query_params.get("access_token")
    return None


def role_of(settings: Settings, request: Request) -> str | None:
    """The role of the request's token: None without one, raises 401 for a wrong one."""
    given = _given_token(request)
    if given is None:
        return None
    matched = None
    for role, secret in (("admin", settings.token), ("ingest", settings.ingest_token), ("read", settings.read_token)):
        # Compare with every configured token, so the time taken says nothing about which.
        if secret is not None and hmac.compare_digest(given.encode(), secret.get_secret_value().encode()):
            matched = matched or role
    if matched is None:
        raise Unauthorized("wrong bearer token")
    return matched


def _check_write(request: Request) -> None:
    """Writes with a body must be JSON, and no browser may write from another site."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    site = request.headers.get("sec-fetch-site", "same-origin")
    origin = request.headers.get("origin")
    if site not in ("same-origin", "none") and origin not in request.app.state.settings.cors_origins:
        raise Forbidden(f"a write from another site ({origin or site}) is refused: see FITWATCH_CORS_ORIGINS")
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    if not has_body:
        return
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    form = request.url.path.startswith(FORM_ROUTES) and kind in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    )
    if kind != "application/json" and not form:
        raise UnsupportedMediaType("writes must be sent as application/json")


def authorize(request: Request, right: Right) -> str:
    """The role the request acts as, if it has `right`; else 401 or 403. Writes must be
    JSON (415)."""
    _check_write(request)
    settings: Settings = request.app.state.settings
    if settings.token is None:
        return "anonymous"  # an open server
    role = role_of(settings, request)
    if right is Right.READ and not settings.protect_reads:
        return role or "anonymous"
    if role is None:
        raise Unauthorized(f"this needs a bearer token ({right.value})")
    if right not in ROLES[role]:
        raise Forbidden(f"the {role} token may not {right.value}")
    return role


def require(right: Right):
    """A dependency that lets the request through only with `right`; gives the role."""

    async def check(request: Request) -> str:  # async: no thread hop for a few comparisons
        return authorize(request, right)

    return Depends(check)


Reader = require(Right.READ)
Ingester = require(Right.INGEST)
Controller = require(Right.CONTROL)
Role = Annotated[str, Controller]


class AccessLog(logging.Filter):
    """Keeps `access_token=...` out of the access log, and successful health checks
    altogether: a container's HEALTHCHECK makes one every few seconds."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            # uvicorn's arguments: client, method, path with query, HTTP version, status.
            if record.args[2:3] == ("/healthz",) and record.args[4:5] == (200,):
                return False
            record.args = tuple(TOKEN_IN_URL.sub(r"\1=[redacted]", a) if isinstance(a, str) else a for a in record.args)
        return True


class Guard:
    """ASGI middleware: the Host check, in the API's error shape."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        hosts = settings.allowed_hosts
        if hosts is None:
            hosts = LOOPBACK_HOSTS if settings.host in LOOPBACK_HOSTS else ["*"]
        self.any_host = "*" in hosts
        self.hosts = {h.lower() for h in hosts}

    def _host_ok(self, scope: Scope) -> bool:
        if self.any_host:
            return True
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name in self.hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # /healthz answers whatever the Host: the container's health check asks 127.0.0.1,
        # which a deployment's FITWATCH_ALLOWED_HOSTS need not list, and it tells nothing.
        if scope["path"] != "/healthz" and not self._host_ok(scope):
            return await error_response(400, "unknown Host header: see FITWATCH_ALLOWED_HOSTS")(scope, receive, send)
        await self.app(scope, receive, send)
