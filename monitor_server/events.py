"""The live-event bus behind SSE streams and command long-polls.

Handlers publish after their transaction commits, from any thread; subscribers are asyncio
queues on the server's event loop. A subscriber that falls too far behind is marked
overflowed and its stream ends, so the browser reconnects and refetches instead of the
server buffering without bound. When the server stops, `close()` ends every subscription,
so event streams and long-polls answer at once and the shutdown is quick and quiet
instead of cancelling them after a grace period.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

QUEUE_SIZE = 2000

RUNS_TOPIC = "runs"


def run_topic(run_id: str) -> str:
    return f"run:{run_id}"


def command_topic(run_id: str) -> str:
    """Woken when a command is issued, for long-polls waiting on the run."""
    return f"commands:{run_id}"


@dataclass(eq=False)
class Subscription:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[tuple[str, Any] | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    overflowed: bool = False
    closed: bool = False  # the server is stopping: answer now

    @property
    def done(self) -> bool:
        return self.overflowed or self.closed

    def _offer(self, item: tuple[str, Any]) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True

    def _close(self) -> None:
        self.closed = True
        try:
            self.queue.put_nowait(None)  # wakes a waiting get(); a full queue is read on anyway
        except asyncio.QueueFull:
            pass

    async def get(self, timeout: float | None = None) -> tuple[str, Any] | None:
        """The next (event, data), or None when `timeout` seconds pass first or it closes."""
        if self.closed:
            return None
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None


class EventBus:
    """In-process publish/subscribe by topic; `publish` is safe from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = {}
        self._closed = False

    def close(self) -> None:
        """End every subscription now and any made later."""
        with self._lock:
            self._closed = True
            subs = {sub for group in self._subs.values() for sub in group}
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub._close)
            except RuntimeError:  # the subscriber's loop has closed
                pass

    def has_subscribers(self, topic: str) -> bool:
        return topic in self._subs

    def start(self, engine) -> None:
        """Begin sharing events with other processes (nothing to do in one process)."""

    def stop(self) -> None:
        """Stop sharing events."""

    def topics(self) -> list[str]:
        with self._lock:
            return list(self._subs)

    def _subscribed(self, topics: tuple[str, ...]) -> None:
        """Called after a subscription starts."""

    def publish(self, topic: str, event: str, data: Any) -> None:
        with self._lock:
            subs = list(self._subs.get(topic, ()))
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub._offer, (event, data))
            except RuntimeError:  # the subscriber's loop has closed
                pass

    @contextmanager
    def subscribe(self, *topics: str) -> Iterator[Subscription]:
        sub = Subscription(asyncio.get_running_loop())
        with self._lock:
            sub.closed = self._closed
            for topic in topics:
                self._subs.setdefault(topic, set()).add(sub)
        self._subscribed(topics)
        try:
            yield sub
        finally:
            with self._lock:
                for topic in topics:
                    subs = self._subs.get(topic)
                    if subs is not None:
                        subs.discard(sub)
                        if not subs:
                            del self._subs[topic]
