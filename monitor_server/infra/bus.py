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
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

QUEUE_SIZE = 2000
RECENT = 20_000  # records a topic keeps for streams that reconnect (other events count one)
GRACE_S = 60.0  # how long a topic keeps them once its last subscriber left
RESYNC = "resync"  # what a stream gets where it cannot be given every event it missed

RUNS_TOPIC = "runs"

Item = tuple[int, str, Any, str]  # (number, event, data, topic); a resync of every topic has topic ""


def run_topic(run_id: str) -> str:
    return f"run:{run_id}"


def command_topic(run_id: str) -> str:
    """Woken when a command is issued, for long-polls waiting on the run."""
    return f"commands:{run_id}"


@dataclass(eq=False)
class Subscription:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Item | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    overflowed: bool = False
    closed: bool = False  # the server is stopping: answer now
    start: int = 0  # the bus's event number when it began: later ones come through `queue`
    # For a stream that reconnects, to send first: what it missed, and a resync for each
    # topic whose events cannot be given whole (one of topic "" where none can).
    missed: list[Item] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.overflowed or self.closed

    def _offer(self, item: Item) -> None:
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

    def call(self, fn, *args) -> None:
        """Run `fn(*args)` on the subscriber's loop, from any thread."""
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the subscriber's loop has closed
            pass

    async def get(self, timeout: float | None = None) -> Item | None:
        """The next (number, event, data, topic), or None when `timeout` seconds pass first or it closes."""
        if self.closed:
            return None
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None


def _weight(item: Item) -> int:
    """What an event costs to keep: its records (a metrics event), else one."""
    data = item[2]
    return max(1, len(data.get("records", ()))) if isinstance(data, dict) else 1


@dataclass(eq=False)
class _Topic:
    since: int  # the bus's event number when the topic began keeping events
    subs: set[Subscription] = field(default_factory=set)
    recent: deque[Item] = field(default_factory=deque)
    kept_weight: int = 0  # records and other events in `recent`
    idle_since: float | None = None  # when its last subscriber left

    def keep(self, item: Item) -> None:
        self.recent.append(item)
        self.kept_weight += _weight(item)
        while self.kept_weight > RECENT:
            dropped = self.recent.popleft()
            self.kept_weight -= _weight(dropped)
            self.since = dropped[0]  # what came before the one it drops is not vouched for

    def expired(self, now: float) -> bool:
        """Nobody followed it for `GRACE_S`: what it keeps serves no reconnect."""
        return self.idle_since is not None and now - self.idle_since > GRACE_S

    def kept_after(self, number: int) -> list[Item] | None:
        """The events after `number`, or None where some of them may not be kept."""
        return None if number < self.since else [item for item in self.recent if item[0] > number]


class EventBus:
    """In-process publish/subscribe by topic; `publish` is safe from any thread.

    Every event gets a number, and its stream id is `EPOCH-NUMBER`. A topic keeps its last
    events, `RECENT` records' worth, `GRACE_S` past its last subscriber, so a stream
    that reconnects with `Last-Event-ID` is given what it missed. Where that cannot be
    known complete (another process or a restart numbered the id, too much happened, the
    events across processes were interrupted) it is told to `resync`: read again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._topics: dict[str, _Topic] = {}
        self._closed = False
        self.epoch = uuid.uuid4().hex[:8]
        self._number = 0

    def close(self) -> None:
        """End every subscription now and any made later."""
        with self._lock:
            self._closed = True
            subs = {sub for topic in self._topics.values() for sub in topic.subs}
        for sub in subs:
            sub.call(sub._close)

    def has_subscribers(self, topic: str) -> bool:
        """Whether a stream follows `topic`, or followed it lately and may come back."""
        return topic in self._topics

    def start(self, engine) -> None:
        """Begin sharing events with other processes (nothing to do in one process)."""

    def stop(self) -> None:
        """Stop sharing events."""

    def topics(self) -> list[str]:
        with self._lock:
            return list(self._topics)

    def _subscribed(self, topics: tuple[str, ...]) -> None:
        """Called after a subscription starts."""

    def stream_id(self, number: int) -> str:
        return f"{self.epoch}-{number}"

    def publish(self, topic: str, event: str, data: Any) -> None:
        with self._lock:
            kept = self._topics.get(topic)
            if kept is None:
                return
            if kept.expired(time.monotonic()):
                del self._topics[topic]
                return
            self._number += 1
            item = (self._number, event, data, topic)
            kept.keep(item)
            # Handed over under the lock: publishers on several threads, and a loop runs
            # callbacks in the order they came, so a stream gets events in number order.
            for sub in kept.subs:
                sub.call(sub._offer, item)

    def lost(self) -> None:
        """Events may have been lost (the link to other processes broke): start a new
        epoch, forget what was kept, and tell every stream to resync."""
        with self._lock:
            self.epoch = uuid.uuid4().hex[:8]
            self._number += 1
            item = (self._number, RESYNC, {}, "")
            for sub in {sub for kept in self._topics.values() for sub in kept.subs}:
                sub.call(sub._offer, item)
            for kept in self._topics.values():
                kept.recent.clear()
                kept.kept_weight = 0
                kept.since = self._number

    @contextmanager
    def subscribe(self, *topics: str, last_event_id: str | None = None) -> Iterator[Subscription]:
        """Follow `topics`. With `last_event_id` (a stream reconnecting), `missed` holds
        what it missed, and a `resync` event for each topic whose events cannot be given
        whole (one for all, of topic "", where the id is of another epoch or malformed)."""
        sub = Subscription(asyncio.get_running_loop())
        with self._lock:
            sub.closed = self._closed
            now = time.monotonic()
            for name in [n for n, t in self._topics.items() if t.expired(now)]:
                del self._topics[name]
            missed = self._missed(topics, last_event_id) if last_event_id is not None else []
            sub.start = self._number
            for name in topics:
                kept = self._topics.setdefault(name, _Topic(self._number))
                kept.subs.add(sub)
                kept.idle_since = None
        sub.missed = missed
        self._subscribed(topics)
        try:
            yield sub
        finally:
            with self._lock:
                for name in topics:
                    kept = self._topics.get(name)
                    if kept is not None:
                        kept.subs.discard(sub)
                        if not kept.subs:
                            kept.idle_since = time.monotonic()

    def _missed(self, topics: tuple[str, ...], last_event_id: str) -> list[Item]:
        """The kept events of `topics` after `last_event_id`, in order, after a resync for
        each topic some of whose may be missing (for all, where the id is not of this epoch)."""
        epoch, _, number = last_event_id.partition("-")
        if epoch != self.epoch or not (number.isascii() and number.isdecimal()):
            return [(self._number, RESYNC, {}, "")]
        resyncs: list[Item] = []
        items: list[Item] = []
        for name in topics:
            kept = self._topics.get(name)
            after = kept.kept_after(int(number)) if kept is not None else None
            if after is None:
                resyncs.append((self._number, RESYNC, {}, name))
            else:
                items += after
        return resyncs + sorted(items, key=lambda item: item[0])
