"""The sender thread: batches what the training logs and delivers it, come what may.

The training thread only appends to the `Sender`'s queue (a deque: no lock, no wait; see
`sender`). Every `flush_interval` seconds, or sooner when a batch is full, this thread
takes what is there, merges consecutive records into log requests of up to
`RECORDS_A_POST` records, and sends them in order. While the server cannot be reached,
everything goes to the run's spool file (so it survives a crash of the training too) and
is sent from there, oldest first, when the server answers again; attempts back off
exponentially with jitter. Memory therefore holds at most what the training logs during
one request timeout. Spool files that earlier runs left behind for the same server are
delivered too, a slice at a time, whenever this run has nothing to send.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from .operations import Op, Operation, Record
from .spool import LockedError, SpoolFile, deliver_file, left_in
from .transport import Rejected, Retry, send
from .wire import RECORDS_A_POST, backoff

log = logging.getLogger("fitwatch")

MEMORY_LIMIT = 100_000  # records kept in memory while neither the server nor the disk takes them
DISK_RETRY = 30.0  # seconds before a disk that refused a write is tried again, unless it has more room
SPOOL_CHUNK = 64  # operations read from the spool at a time
BACKOFF_BASE = 0.25
BACKOFF_CAP = 10.0
FLUSH_BACKOFF_CAP = 1.0


class SenderThread(threading.Thread):
    """Delivers one start of a client: what its `Sender` queues, and the spool files that
    earlier runs left behind. The `Sender` is its only user."""

    def __init__(
        self,
        connect: Callable[[], httpx.Client],
        run_id: str,
        queue: deque[Record | Operation],
        spool: SpoolFile,
        on_commands: Callable[[list[dict[str, Any]]], None],
        notify: Callable[[str, str], None],
        flush_interval: float,
        backlog: list[Path],
        prepare: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(name=f"fitwatch-sender-{run_id}", daemon=True)
        self.connect = connect  # made on this thread: building an httpx client takes ~20 ms
        self.prepare = prepare  # run on this thread first: what a queued body reads (see `_merge`)
        self.http: httpx.Client | None = None
        self.run_id = run_id
        self.queue = queue
        self.spool = spool
        self.on_commands = on_commands
        self.notify = notify
        self.flush_interval = flush_interval
        self.wake = threading.Event()
        # flush() waits until a pass that began after it finds nothing left to send: a pass
        # that began before may end before the newest records are even read.
        self._flushes = 0  # flush() calls so far
        self._flushed = 0  # the newest of them that such a pass has answered
        self._flush_done = threading.Condition()
        self.created = threading.Event()  # the server has the run: commands may be polled
        self.stopping = False
        self.abandoned = False
        self._pending: deque[Op] = deque()
        self._lock = threading.Lock()
        self._failures = 0
        self._retry_at = 0.0
        self._flushing = False
        self._spooled = spool.size() > 0  # the spool file holds undelivered operations
        self._spool_offset = 0  # where in it delivery goes on
        self._backlog = list(backlog)  # spool files of earlier runs, sent after this run's own data
        self._backlog_offset = 0
        self._disk_refused: tuple[float, int] | None = None  # (when, free bytes) of the last refusal

    # -- the Sender's, from other threads ----------------------------------------------

    def journal(self, op: Op) -> bool:
        """Put `op` on disk now and deliver it from there: an ack, which must survive a
        crash of the training. False when the disk refuses (then it goes by memory)."""
        with self._lock:
            if self.abandoned or not self._disk_has_room():
                return False
            try:
                self.spool.append([op])
            except Exception as exc:  # a full disk: never an error in the training
                self._disk_full(exc)
                return False
            self._spooled = True
        self.wake.set()
        return True

    def flush(self, timeout: float) -> bool:
        """Try to deliver everything now (older spool files too); True when all that was
        queued before the call is sent."""
        with self._flush_done:
            self._flushes += 1
            asked = self._flushes
        self._flushing = True  # retry at least once a second while someone waits
        self._retry_at = 0.0
        self.wake.set()
        try:
            with self._flush_done:
                return self._flush_done.wait_for(lambda: self._flushed >= asked, timeout)
        finally:
            self._flushing = False

    def _answer_flushes(self, asked: int) -> None:
        """A pass that began when `asked` flushes had been made left nothing to send."""
        with self._flush_done:
            if asked > self._flushed:
                self._flushed = asked
            self._flush_done.notify_all()

    def close(self, timeout: float) -> tuple[int, int]:
        """Deliver for up to `timeout` s, then stop; (records, other operations) left in
        the spool. A thread stuck in a request exits when it returns."""
        self.stopping = True  # the loop ends once nothing is left
        if self.flush(timeout):
            return 0, 0
        return self._abandon()

    def _abandon(self) -> tuple[int, int]:
        """Stop for good and move whatever is unsent into the spool; (records, other
        operations) left there."""
        with self._lock:
            self.abandoned = True
            self.stopping = True
            ops = list(self._pending) + _merge(_drain(self.queue))
            self._pending.clear()
            try:
                self.spool.append(ops)
            except Exception as exc:  # never an error in the training
                lost = sum(len(op.get("records", ())) for op in ops)
                others = len(ops) - sum(op["op"] == "logs" for op in ops)
                self.notify(
                    "lost",
                    f"fitwatch: {lost} records and {others} other operations could not be delivered nor written "
                    f"to {self.spool.path} ({exc}); they are lost",
                )
        self.wake.set()
        left = left_in(self.spool, self._spool_offset) if self.spool.size() else (0, 0)
        self.spool.close()
        return left

    # -- the thread -----------------------------------------------------------------------

    def run(self) -> None:
        self.prepare()
        self.http = self.connect()
        try:
            self._loop()
        finally:
            self.http.close()

    def _loop(self) -> None:
        while not self.abandoned:
            self.wake.wait(self._pause())
            self.wake.clear()
            with self._flush_done:
                asked = self._flushes  # before the queue is read: what they queued is in this pass
            try:
                self._pass()
            except Exception as exc:  # a full disk, or a bug: keep the data, report, go on
                self.notify("error", f"fitwatch: delivery failed unexpectedly ({exc!r}); retrying")
                self._failed(repr(exc))
            if self._nothing_left():
                self._answer_flushes(asked)
                if self.stopping:
                    return

    def _pass(self) -> None:
        with self._lock:
            if self.abandoned:
                return
            self._pending.extend(_merge(_drain(self.queue)))
            # The server is away: put everything on disk before trying again; without a disk
            # either, keep it in memory, up to a limit.
            if self._failures and self._pending and not (self._disk_has_room() and self._spool_pending()):
                self._shed()
        if time.monotonic() >= self._retry_at:
            self._deliver()

    def _spool_pending(self) -> bool:
        try:
            self.spool.append(list(self._pending))
        except OSError as exc:
            self._disk_full(exc)
            return False
        self._pending.clear()
        self._spooled = True
        return True

    def _disk_full(self, exc: Exception) -> None:
        """The disk refused a write: leave it alone until it has more room than now (or for
        DISK_RETRY s), so that a full disk costs no encoding and no fsync every pass."""
        self._disk_refused = time.monotonic(), _free_bytes(self.spool.path.parent)
        self.notify("spool", f"fitwatch: cannot write the spool file {self.spool.path}: {exc}")

    def _disk_has_room(self) -> bool:
        if self._disk_refused is None:
            return True
        when, free = self._disk_refused
        if time.monotonic() - when < DISK_RETRY and _free_bytes(self.spool.path.parent) <= free:
            return False
        self._disk_refused = None
        return True

    def _shed(self) -> None:
        """Drop the oldest records beyond MEMORY_LIMIT (never an ack or the run's end)."""
        held = sum(len(op["records"]) for op in self._pending if op["op"] == "logs")
        dropped = 0
        for op in list(self._pending):
            if held - dropped <= MEMORY_LIMIT:
                break
            if op["op"] == "logs":
                self._pending.remove(op)
                dropped += len(op["records"])
        if dropped:
            self.notify(
                "shed",
                f"fitwatch: neither {self.http.base_url} nor the disk takes records; the oldest are dropped "
                f"to keep at most {MEMORY_LIMIT} in memory",
            )

    def _pause(self) -> float:
        if self._failures:
            return max(0.0, min(self._retry_at - time.monotonic(), self.flush_interval))
        return self.flush_interval

    def _nothing_left(self) -> bool:
        return not self.queue and not self._pending and not self._spooled and not self._backlog

    def _deliver(self) -> None:
        try:
            self._deliver_spool()
            while self._pending and not self.abandoned:
                self._send(self._pending[0])
                with self._lock:
                    if self.abandoned:
                        return
                    self._pending.popleft()
        except Retry as exc:
            self._failed(str(exc))
            return
        if self._failures:
            log.info("fitwatch: %s is answering again; delivery resumed", self.http.base_url)
            self._failures = 0
        self._deliver_backlog()

    def _deliver_spool(self) -> None:
        while self._spooled:
            with self._lock:
                # Writers hold the lock: a line read under it is whole and stays (a write the
                # disk refused is cut back out before they let go).
                if self.abandoned:
                    return
                chunk = self.spool.read(self._spool_offset, SPOOL_CHUNK)
                if not chunk:  # all is sent
                    self.spool.remove()
                    self._spooled = False
                    self._spool_offset = 0
                    return
            for offset, op in chunk:
                if self.abandoned:
                    return
                self._send(op)
                self._spool_offset = offset

    def _deliver_backlog(self) -> None:
        """Older spool files, a slice at a time, while this run has nothing to send."""
        while self._backlog and not self.abandoned and not self._pending and not self._spooled:
            path = self._backlog[0]
            try:
                self._backlog_offset = deliver_file(
                    self.http, SpoolFile(path), self._backlog_offset, stop=lambda: self.abandoned or bool(self.queue)
                ).offset
            except LockedError:
                self._backlog_offset = 0
            except Retry as exc:
                self._failed(str(exc))
                return
            except (OSError, ValueError) as exc:
                self.notify("spool", f"fitwatch: could not read the spool file {path}: {exc}")
                self._backlog_offset = 0
            if self._backlog_offset:
                return  # paused for this run's own records; goes on at the next pass
            self._backlog.pop(0)

    def _send(self, op: Op) -> None:
        try:
            answer = send(self.http, self.run_id, op)
        except Rejected as exc:
            self.notify("rejected", f"fitwatch: the server refused the run's {op['op']} request ({exc}); it is dropped")
            return
        if op["op"] == "create":
            self.created.set()
        if answer is not None and answer["commands"]:
            self.on_commands(answer["commands"])

    def _failed(self, reason: str) -> None:
        self._failures += 1
        cap = FLUSH_BACKOFF_CAP if self._flushing else BACKOFF_CAP
        self._retry_at = time.monotonic() + backoff(self._failures, BACKOFF_BASE, cap)
        if self._failures == 1:
            self.notify(
                "unreachable",
                f"fitwatch: cannot deliver to {self.http.base_url} ({reason}). Training goes on; "
                f"records are kept in {self.spool.path} and sent when the server answers.",
            )


def _free_bytes(folder: Path) -> int:
    try:
        stat = os.statvfs(folder)
    except OSError:  # no folder: no room
        return 0
    return stat.f_bavail * stat.f_frsize


def _drain(queue: deque[Record | Operation]) -> list[Record | Operation]:
    items = []
    try:
        while True:
            items.append(queue.popleft())
    except IndexError:
        return items


def _merge(items: list[Record | Operation]) -> list[Op]:
    """Queue items in their wire form: consecutive records become log requests."""
    ops: list[Op] = []
    for item in items:
        if not isinstance(item, dict):
            ops.append(item.as_op())
        elif ops and ops[-1]["op"] == "logs" and len(ops[-1]["records"]) < RECORDS_A_POST:
            ops[-1]["records"].append(item)
        else:
            ops.append({"op": "logs", "records": [item]})
    return ops
