"""The dashboard's pages and static files, and Plotly.js from the `plotly` package.

The pages are static; they read everything through the API, so data reaches them only as
JSON and is put into the page as text. Plotly.js (4.8 MB) is gzipped once in memory
(1.4 MB) and cached by browsers, revalidated by its version.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.resources
import importlib.util
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from ..access import Reader
from ..db import reading
from ..report import render as render_report
from .deps import EngineDep, RunIdPath, SettingsDep

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

router = APIRouter(include_in_schema=False)
static = StaticFiles(directory=WEB)


def page(name: str) -> FileResponse:
    return FileResponse(WEB / name, media_type="text/html", headers={**PAGE_HEADERS, "Cache-Control": "no-cache"})


@router.get("/")
def runs_page() -> FileResponse:
    """The run list."""
    return page("index.html")


@router.get("/runs/{run_id}")
def run_page(run_id: RunIdPath) -> FileResponse:
    """One run: live curves and the controls."""
    return page("run.html")


@router.get("/compare")
def compare_page() -> FileResponse:
    """One metric of several runs, overlaid."""
    return page("compare.html")


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
