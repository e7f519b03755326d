"""HTTP to the fitwatch server: one operation a call, and what a failure means.

An operation is a dict (see `spool`): create a run, post log records, acknowledge a
command, or patch the run. Each is idempotent on the server, so any of them may be sent
again after a failure. `Retry` means try later (the server is down, slow, overloaded, or
refused the token); `Rejected` means the server will never take it. A log post that
conflicts with stored data (409) is retried too: records are stored once however often
they are sent, and a conflict must never cost one.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from .wire import DEFAULT_URL, ENV_TOKEN, ENV_URL

RETRY_STATUS = frozenset({401, 403, 408, 425, 429})
LOG_RETRY_STATUS = RETRY_STATUS | {409}


class Retry(Exception):
    """The operation may succeed later."""


class Rejected(Exception):
    """The server refused the operation for good (a 4xx other than those retried)."""


def server_url(url: str | None = None) -> str:
    """The server a training talks to: `url`, else `FITWATCH_URL`, else the default; no
    trailing slash."""
    return normalize_url(url or os.environ.get(ENV_URL) or DEFAULT_URL)


def server_token(token: str | None = None) -> str | None:
    """The bearer token: `token`, else `FITWATCH_TOKEN`; None for none."""
    return token or os.environ.get(ENV_TOKEN) or None


def normalize_url(url: str) -> str:
    return url.rstrip("/")


def http_client(url: str, token: str | None, timeout: float) -> httpx.Client:
    # X-Fitwatch-Client marks the training: on an open server, taking pending commands
    # needs it, since a page on another site cannot send it (see monitor_server/access.py).
    headers = {"content-type": "application/json", "user-agent": "fitwatch-client", "x-fitwatch-client": "1"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    # Plain http needs no certificates; loading them is most of the ~20 ms a client costs.
    verify = url.startswith("https:")
    return httpx.Client(
        base_url=url, headers=headers, timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)), verify=verify
    )


def describe_response(response: httpx.Response) -> str:
    """An error answer in one line: `HTTP 404: run 'x' not found`."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = response.text[:200]
    return f"HTTP {response.status_code}: {detail}"


def request(
    http: httpx.Client, method: str, path: str, body: Any = None, retry: frozenset[int] = RETRY_STATUS, **kwargs
) -> httpx.Response:
    """Send one request; raise `Retry` (a status in `retry`, 5xx, no answer) or `Rejected`
    unless it succeeded."""
    content = None if body is None else json.dumps(body, separators=(",", ":"))
    try:
        response = http.request(method, path, content=content, **kwargs)
    except httpx.HTTPError as exc:
        raise Retry(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
    if response.is_success:
        return response
    if response.status_code in retry or response.status_code >= 500:
        raise Retry(describe_response(response))
    raise Rejected(describe_response(response))


def send(http: httpx.Client, run_id: str, op: dict[str, Any]) -> dict[str, Any] | None:
    """Carry out one operation; the log answer (with its commands) for `logs`."""
    kind = op["op"]
    if kind == "logs":
        body = {"records": op["records"]}
        return request(http, "POST", f"/api/v1/runs/{run_id}/logs", body, retry=LOG_RETRY_STATUS).json()
    if kind == "create":
        run = request(http, "POST", "/api/v1/runs", op["body"]).json()
        if run["status"] != "running" and op.get("resume", True):
            # The run exists and had ended: this process is training it again.
            request(http, "PATCH", f"/api/v1/runs/{run_id}", {"status": "running"})
        return None
    if kind == "ack":
        request(http, "POST", f"/api/v1/runs/{run_id}/commands/{op['id']}/ack", op["body"])
        return None
    if kind == "patch":
        request(http, "PATCH", f"/api/v1/runs/{run_id}", op["body"])
        return None
    raise ValueError(f"unknown operation {kind!r}")
