"""Notifications of rule firings, POSTed as JSON to the operator's `FITWATCH_WEBHOOK_URL`.

Only that URL, set where the server runs, is ever called: an API client cannot name one,
so a rule cannot make the server reach into its own network. Sending happens on a thread
of its own, never on the request that stored the point: `send` only queues. A failed
POST (no connection, a 5xx or 429) is tried again after 0.5, 1, 2, 4 and 8 s, while
later notifications go on; the outcome is kept on the rule (`notified_at`, or
`notify_error`), so a webhook that fails is visible on the rules page.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from typing import Any

import httpx
from sqlalchemy import Engine

from ..domain.rules import FiringPublic
from ..store.rules import record_notification
from .db import writing

log = logging.getLogger("fitwatch")

BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0)  # seconds before each retry
QUEUE_SIZE = 1000
TIMEOUT = 10.0


def payload(firing: FiringPublic) -> dict[str, Any]:
    """The JSON a receiver gets; `text` reads well in a chat channel."""
    value = firing.model_dump(mode="json")["value"]
    return {
        "rule": firing.rule_id,
        "run": firing.run_id,
        "step": firing.step,
        "value": value,
        "command": firing.command_id,
        "series": {"scope": firing.scope, "name": firing.name},
        "text": f"fitwatch: run {firing.run_id}, step {firing.step}, {firing.name} = {value}: "
        f"rule {firing.rule_id} fired ({firing.description})",
    }


class Webhooks:
    """Delivers firings to one URL from a background thread, retrying with backoff."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self._queue: queue.Queue[tuple[int, dict[str, Any]] | None] = queue.Queue(QUEUE_SIZE)
        self._engine: Engine | None = None
        self._thread: threading.Thread | None = None

    def start(self, engine: Engine) -> None:
        if self.url is None:
            return
        self._engine = engine
        self._thread = threading.Thread(target=self._run, name="fitwatch-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(5)

    def send(self, firing: FiringPublic) -> None:
        """Queue a notification; never blocks. A full queue drops it, and says so on the rule."""
        if self._thread is None:
            return
        try:
            self._queue.put_nowait((firing.rule_id, payload(firing)))
        except queue.Full:
            self._record(firing.rule_id, f"dropped: {QUEUE_SIZE} notifications were already waiting")

    def _run(self) -> None:
        retries: list[tuple[float, int, int, int, dict[str, Any]]] = []  # (due, order, attempt, rule, body)
        order = itertools.count()
        with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as http:
            while True:
                wait = max(0.0, retries[0][0] - time.monotonic()) if retries else None
                try:
                    item = self._queue.get(timeout=wait)
                    if item is None:
                        return
                    heapq.heappush(retries, (time.monotonic(), next(order), 0, *item))
                except queue.Empty:
                    pass
                while retries and retries[0][0] <= time.monotonic():
                    _, _, attempt, rule_id, body = heapq.heappop(retries)
                    error, final = self._post(http, body)
                    if error is None or final or attempt == len(BACKOFF):
                        self._record(rule_id, error)
                    else:
                        due = time.monotonic() + BACKOFF[attempt]
                        heapq.heappush(retries, (due, next(order), attempt + 1, rule_id, body))

    def _post(self, http: httpx.Client, body: dict[str, Any]) -> tuple[str | None, bool]:
        """(error or None, whether trying again is pointless)."""
        try:
            response = http.post(self.url, json=body)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}", False
        if response.is_success:
            return None, True
        retry = response.status_code >= 500 or response.status_code == 429
        return f"HTTP {response.status_code} from the webhook", not retry

    def _record(self, rule_id: int, error: str | None) -> None:
        if error is not None:
            log.warning("fitwatch: webhook for rule %d failed: %s", rule_id, error)
        try:
            with writing(self._engine) as conn:
                record_notification(conn, rule_id, time.time(), error)
        except Exception as exc:  # the rule was deleted meanwhile, or the database is away
            log.info("fitwatch: could not record a webhook outcome for rule %d: %s", rule_id, exc)
