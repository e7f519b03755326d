"""The dashboard's pages and static files, and Plotly.js from the `plotly` package.

The pages are static; they read everything through the API, so data reaches them only as
JSON and is put into the page as text. Plotly.js (4.8 MB) is gzipped once in memory
(1.4 MB) and cached by browsers, revalidated by its version. An address that is no page
(an unknown run, a mistyped path) answers a not-found page for a person; under the API's
own paths it stays the JSON 404.
"""

from __future__ import annotations

import gzip
import html
import importlib.metadata
import importlib.resources
import importlib.util
import re
from functools import cache
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from ...domain.errors import NotFound
from ...domain.schemas import RUN_ID_PATTERN
from ...infra.db import reading
from ...services.report import render as render_report
from ...store.runs import get_run_row
from ..access import Reader
from ..deps import EngineDep, RunIdPath, SettingsDep

WEB = Path(str(importlib.resources.files("monitor_server.web")))
# Located without importing plotly, which would cost the server ~10 MB and 0.1 s at start.
PLOTLY_JS = Path(importlib.util.find_spec("plotly").origin).parent / "package_data" / "plotly.min.js"
PLOTLY_VERSION = importlib.metadata.version("plotly")

# Pages run no inline script; Plotly sets inline styles, so styles may be inline.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# Plotly's parallel coordinates (the sweep view) draw with WebGL and compile their drawing
# code with `new Function` (regl): the compare page allows that, and still no inline script.
COMPARE_HEADERS = {
    **PAGE_HEADERS,
    "Content-Security-Policy": PAGE_HEADERS["Content-Security-Policy"].replace(
        "script-src 'self';", "script-src 'self' 'unsafe-eval';"
    ),
}

router = APIRouter(include_in_schema=False)
static = StaticFiles(directory=WEB)
# Where an unknown address is a program's, answered with the API's JSON 404.
API_PATHS = ("/api/", "/publish/", "/static/")
PATH_SHOWN = 200  # characters of an unknown address the not-found page repeats


def page(name: str, headers: dict[str, str] = PAGE_HEADERS) -> FileResponse:
    return FileResponse(WEB / name, media_type="text/html", headers={**headers, "Cache-Control": "no-cache"})


@cache
def _not_found_html() -> str:
    return (WEB / "notfound.html").read_text(encoding="utf-8")


def not_found_page(what: str) -> HTMLResponse:
    """A 404 page that says what is not here and links to the run list."""
    text = _not_found_html().replace("<!--what-->", html.escape(what))
    return HTMLResponse(text, status_code=404, headers={**PAGE_HEADERS, "Cache-Control": "no-cache"})


def install_not_found(app: FastAPI) -> None:
    """Answer a person's request for an address that matches no route with a page."""
    answer_api = app.router.not_found

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and not path.startswith(API_PATHS):
            shown = path if len(path) <= PATH_SHOWN else path[:PATH_SHOWN] + "…"
            await not_found_page(f"There is no page at {shown}.")(scope, receive, send)
        else:
            await answer_api(scope, receive, send)

    app.router.default = not_found


@router.get("/")
def runs_page() -> FileResponse:
    """The run list."""
    return page("index.html")


@router.get("/runs/{run_id}")
def run_page(run_id: str, engine: EngineDep, settings: SettingsDep) -> Response:
    """One run: live curves and the controls. A run that is not there gets the not-found
    page, unless reads need a token, which a page's address does not carry: then the page
    itself learns it from the API."""
    if not re.match(RUN_ID_PATTERN, run_id):
        return not_found_page(f"There is no run {run_id[:PATH_SHOWN]!r}: a run's id is letters, digits, '_', '.', '-'.")
    if not settings.protect_reads:
        try:
            with reading(engine) as conn:
                get_run_row(conn, run_id)
        except NotFound:
            return not_found_page(f"There is no run {run_id!r}: it was deleted, or never made.")
    return page("run.html")


@router.get("/compare")
def compare_page() -> FileResponse:
    """One metric of several runs, overlaid."""
    return page("compare.html", COMPARE_HEADERS)


@router.get("/rules")
def rules_page() -> FileResponse:
    """Rules: what the server watches for, and what it does."""
    return page("rules.html")


# The report runs Plotly inline: opened from the server, it runs sandboxed in an origin of
# its own, out of reach of the dashboard's token and API, and fetches nothing.
REPORT_HEADERS = {
    "Content-Security-Policy": (
        "sandbox allow-scripts allow-downloads; default-src 'none'; script-src 'unsafe-inline'; "
        "style-src 'unsafe-inline'; img-src data: blob:; font-src data:"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@router.get("/runs/{run_id}/report.html", dependencies=[Reader])
def report(run_id: RunIdPath, engine: EngineDep, settings: SettingsDep, download: bool = False) -> Response:
    """The run's charts and config in one HTML file that opens offline: shown in the
    browser, or with `?download=1` saved as `RUN-report.html`."""
    with reading(engine) as conn:
        text = render_report(conn, run_id, settings.stale_after)
    disposition = f'attachment; filename="{run_id}-report.html"' if download else "inline"
    return Response(text, media_type="text/html", headers={**REPORT_HEADERS, "Content-Disposition": disposition})


@cache
def _plotly_gz() -> bytes:
    return gzip.compress(PLOTLY_JS.read_bytes(), compresslevel=6)


@router.get("/static/plotly.min.js")
def plotly_js(request: Request) -> Response:
    """Plotly.js from the installed `plotly` package: no CDN, works offline."""
    etag = f'"plotly-{PLOTLY_VERSION}"'
    headers = {"Cache-Control": "public, max-age=86400", "ETag": etag, "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(_plotly_gz(), media_type="text/javascript", headers={**headers, "Content-Encoding": "gzip"})
    return FileResponse(PLOTLY_JS, media_type="text/javascript", headers=headers)
