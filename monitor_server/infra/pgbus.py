"""The live-event bus across server processes: PostgreSQL `LISTEN/NOTIFY`.

With several replicas (or `--workers N`) on one PostgreSQL database, a point posted to
one process must reach SSE streams and command long-polls held by another. Every publish
becomes a `NOTIFY fitwatch`; each process LISTENs on its own connection and hands what
arrives (its own notifications included) to its local subscribers. No broker beyond the
database.

A notification carries at most 8,000 bytes: metrics events are split into several, and a
`run` event that is too big (a large config), or that holds an integer past 64 bits (which
orjson neither writes nor reads exactly), travels as a reference that the listener reads
back from the database. Metrics are only sent for runs that some process streams:
a process with subscribers to a run says so every few seconds (`interest`), and the
others remember it for a while.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import orjson
import psycopg
from sqlalchemy.engine import Engine, make_url

from client_callbacks.wire import backoff

from ..store.runs import read_run
from .bus import RUNS_TOPIC, EventBus
from .db import reading

log = logging.getLogger("fitwatch")

CHANNEL = "fitwatch"
LIMIT = 7900  # bytes; PostgreSQL's payload limit is 8,000
INTEREST_EVERY = 5.0  # seconds between a process's reminders of the runs it streams
INTEREST_TTL = 15.0


def libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def payloads(topic: str, event: str, data: Any) -> list[bytes]:
    """The notification payloads of one event, each within LIMIT."""
    try:
        payload = orjson.dumps({"t": topic, "e": event, "d": data})
    except orjson.JSONEncodeError:  # an integer past 64 bits: only a run's config holds one
        payload = None
    if payload is not None and len(payload) <= LIMIT:
        return [payload]
    if event == "metrics":
        records = data["records"]
        if len(records) > 1:
            half = len(records) // 2
            return payloads(topic, event, {"records": records[:half]}) + payloads(
                topic, event, {"records": records[half:]}
            )
        metrics = list(records[0]["metrics"].items())
        if len(metrics) > 1:
            half = len(metrics) // 2
            return [
                p
                for part in (metrics[:half], metrics[half:])
                for p in payloads(topic, event, {"records": [{**records[0], "metrics": dict(part)}]})
            ]
    if event == "run":
        return [orjson.dumps({"t": topic, "e": event, "ref": data["id"]})]
    why = "an integer past 64 bits" if payload is None else f"{len(payload)} bytes"
    log.warning("fitwatch: a %s event (%s) cannot go through NOTIFY; not sent to other processes", event, why)
    return []


class PostgresBus(EventBus):
    """An EventBus whose publishes go through PostgreSQL to every server process."""

    def __init__(self, url: str, stale_after: float) -> None:
        super().__init__()
        self._dsn = libpq_url(url)
        self._stale_after = stale_after
        self._engine: Engine | None = None
        self._outbox: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._listening = threading.Event()
        self._interest: dict[str, float] = {}  # run topic -> until when some process streams it
        self._threads: list[threading.Thread] = []

    def start(self, engine: Engine) -> None:
        self._engine = engine
        self._threads = [
            threading.Thread(target=self._listen, name="fitwatch-listen", daemon=True),
            threading.Thread(target=self._send, name="fitwatch-notify", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        if not self._listening.wait(10):
            log.warning("fitwatch: not listening for events of other server processes yet")

    def stop(self) -> None:
        """Stop listening and sending, and wait for both, so that nothing uses the engine
        once the server disposes of it (a connection left open warns when collected)."""
        self._stopped.set()
        self._notify(orjson.dumps({"interest": []}).decode())  # wakes the listener now
        self._outbox.put(None)
        for thread in self._threads:
            thread.join(timeout=5)

    def has_subscribers(self, topic: str) -> bool:
        if not topic.startswith("run:"):
            return True  # small and rare: always shared
        return super().has_subscribers(topic) or self._interest.get(topic, 0.0) > time.monotonic()

    def _subscribed(self, topics: tuple[str, ...]) -> None:
        self._announce_interest([t for t in topics if t.startswith("run:")])

    def _announce_interest(self, topics: list[str]) -> None:
        if topics:
            self._notify(orjson.dumps({"interest": topics}).decode())

    def publish(self, topic: str, event: str, data: Any) -> None:
        for payload in payloads(topic, event, data):
            self._notify(payload.decode())

    def _notify(self, payload: str) -> None:
        """Queue a notification: publishers (the event loop among them) never wait on it."""
        self._outbox.put(payload)

    def _send(self) -> None:
        """Send queued notifications in order on one connection of this thread's own."""
        conn: psycopg.Connection | None = None
        while (payload := self._outbox.get()) is not None:
            for attempt in range(2):
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(self._dsn, autocommit=True)
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
                    break
                except psycopg.Error as exc:
                    conn = None
                    if attempt:
                        log.warning("fitwatch: could not publish a live event: %s", exc)
        if conn is not None:
            conn.close()

    def _listen(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if self._listening.is_set():  # back after a break: what came meanwhile is lost
                        self.lost()
                    self._listening.set()
                    failures = 0
                    reminded = 0.0
                    while not self._stopped.is_set():
                        for note in conn.notifies(timeout=1.0):
                            if self._stopped.is_set():
                                break
                            self._deliver(note.payload)
                        if time.monotonic() - reminded > INTEREST_EVERY:
                            reminded = time.monotonic()
                            self._announce_interest([t for t in self.topics() if t.startswith("run:")])
            except psycopg.Error as exc:
                log.warning("fitwatch: lost the event listener connection (%s); reconnecting", exc)
                failures += 1
                self._stopped.wait(backoff(failures, base=0.5, cap=10.0))

    def _deliver(self, payload: str) -> None:
        message = orjson.loads(payload)
        if "interest" in message:
            until = time.monotonic() + INTEREST_TTL
            for topic in message["interest"]:
                self._interest[topic] = until
            return
        data = message.get("d")
        if "ref" in message:
            try:
                with reading(self._engine) as conn:
                    run = read_run(conn, message["ref"], self._stale_after)
                data = run.summary_json() if message["t"] == RUNS_TOPIC else run.model_dump(mode="json")
            except Exception as exc:  # deleted since, or the database is away
                log.info("fitwatch: dropped a run event for %s: %s", message["ref"], exc)
                return
        super().publish(message["t"], message["e"], data)
