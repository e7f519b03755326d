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
- A request whose `Origin` is neither this server (by the Host header) nor listed in
  `FITWATCH_CORS_ORIGINS` is refused (403), whatever else it says: a browser without
  `Sec-Fetch-Site` still names the page that sent a form.
- Taking pending commands changes them (they become `delivered`) though it is a GET,
  which a page on another site can make a browser send. On an open server it must carry
  `X-Fitwatch-Client`, which fitwatch's client always sends and such a page cannot
  without a CORS preflight; else 403, and no command changes. Refused rather than
  answered without handing over: a caller that is not the training learns at once what
  it lacks instead of reading commands that were never delivered. With tokens the ingest
  or admin token is the proof.
- The Host header must be one the server answers to: loopback names when it listens on
  loopback, so a hostile page cannot reach it through a DNS name that resolves to
  127.0.0.1.
"""

from __future__ import annotations

import hmac
import logging
from enum import Enum
from typing import Annotated, Any
from urllib.parse import unquote_plus, urlsplit

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import Settings
from ..domain.errors import Forbidden, Unauthorized, UnsupportedMediaType
from .errors import error_response

LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "::1", "[::1]"]
FORM_ROUTES = ("/publish/",)
TRAINING_HEADER = "X-Fitwatch-Client"  # client_callbacks/transport.py sends it
DEFAULT_PORTS = {"http": 80, "https": 443}
# How the OpenAPI document names the two ways a token may come.
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "access_token": {"type": "apiKey", "in": "query", "name": "access_token"},
}


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


def _own_origin(origin: str, host: str) -> bool:
    """Whether `origin` is this server as the request reached it: the host and port of the
    Host header (the scheme may differ behind a proxy that ends TLS)."""
    try:
        page, own = urlsplit(origin), urlsplit(f"//{host}")
        default = DEFAULT_PORTS.get(page.scheme)
        same_port = (page.port or default) == (own.port or default)
    except ValueError:  # not a URL (`http://[`), or a port that is not a number
        return False
    return default is not None and page.hostname is not None and page.hostname == own.hostname and same_port


def _check_origin(request: Request) -> None:
    """A browser names the page's origin on every write and on every request to another
    origin: a foreign one is refused, whatever else the request says."""
    origin = request.headers.get("origin")
    if origin is None or origin in request.app.state.settings.cors_origins:
        return
    if not _own_origin(origin, request.headers.get("host", "")):
        raise Forbidden(f"a request from another site ({origin}) is refused: see FITWATCH_CORS_ORIGINS")


def _check_training(request: Request, right: Right) -> None:
    """On an open server, a GET that changes state (taking pending commands) must carry
    the header fitwatch's client sends: a page on another site cannot send it."""
    if right is Right.INGEST and request.method == "GET" and TRAINING_HEADER not in request.headers:
        raise Forbidden(f"taking pending commands needs the {TRAINING_HEADER} header, which fitwatch's client sends")


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
    _check_origin(request)
    _check_write(request)
    settings: Settings = request.app.state.settings
    if settings.token is None:  # an open server
        _check_training(request, right)
        return "anonymous"
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

    check.right = right  # for the OpenAPI document: see `security`
    return Depends(check)


Reader = require(Right.READ)
Ingester = require(Right.INGEST)
Controller = require(Right.CONTROL)
Role = Annotated[str, Controller]


def _right_of(dependant: Dependant) -> Right | None:
    """The right an operation's dependencies ask for (see `require`), if any."""
    stack = list(dependant.dependencies)
    while stack:
        dependency = stack.pop()
        if (right := getattr(dependency.call, "right", None)) is not None:
            return right
        stack.extend(dependency.dependencies)
    return None


def security(settings: Settings, dependant: Dependant, method: str) -> list[dict[str, Any]] | None:
    """The OpenAPI security requirement of an operation: the ways a token may come (the URL
    only for a GET), or none (`{}`) for an open read; None where no token counts."""
    right = _right_of(dependant)
    if settings.token is None or right is None:
        return None
    ways: list[dict[str, Any]] = [{"bearer": []}, {"access_token": []}] if method == "GET" else [{"bearer": []}]
    return [{}, *ways] if right is Right.READ and not settings.protect_reads else ways


def _redacted(target: str) -> str:
    """`target` with the value of each `access_token` parameter hidden, however its name is
    written (`access%5Ftoken`, `ACCESS_TOKEN`), and all else as it came."""
    path, mark, query = target.partition("?")
    if not mark:
        return target
    params = [param.partition("=") for param in query.split("&")]  # as Starlette splits them
    hidden = [
        (name, eq, "[redacted]" if eq and unquote_plus(name).casefold() == "access_token" else value)
        for name, eq, value in params
    ]
    return f"{path}?{'&'.join(''.join(param) for param in hidden)}"


class AccessLog(logging.Filter):
    """Keeps tokens in URLs out of the access log, and successful health checks
    altogether: a container's HEALTHCHECK makes one every few seconds."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's arguments: client, method, path with query, HTTP version, status.
        if isinstance(record.args, tuple) and len(record.args) == 5:
            if record.args[2] == "/healthz" and record.args[4] == 200:
                return False
            if isinstance(record.args[2], str):
                record.args = (*record.args[:2], _redacted(record.args[2]), *record.args[3:])
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
