"""Sender: everything a client sends, in order, behind a narrow interface.

The client hands it records (`put_record`, the hot path: an append to a deque, no lock, no
I/O) and typed operations (`put_op`: `CreateRun`, `Patch`, `Ack`, see `operations`). While
the client runs, between `start` and `close`, a `SenderThread` delivers them (see
`sender_thread`). The queue outlives each start: what is queued before `start`, or after a
`close`, waits for the next start and goes after its run creation.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from .operations import Ack, CreateRun, Operation, Record
from .sender_thread import SenderThread
from .spool import SpoolFile
from .wire import RECORDS_A_POST


class Unsent(NamedTuple):
    """What `close` could not deliver: left in the spool file at `path`."""

    records: int
    others: int  # operations other than records: the run's end, command acks
    path: Path


class Sender:
    """One client's outgoing queue. `put_record` and `put_op` from any thread; `start`,
    `flush` and `close` from the client's."""

    def __init__(
        self, run_id: str, on_commands: Callable[[list[dict[str, Any]]], Any], notify: Callable[[str, str], None]
    ) -> None:
        self.run_id = run_id
        self._on_commands = on_commands  # what a log answer brings along
        self._notify = notify  # notify(kind, message): a problem, for the caller to see
        self._queue: deque[Record | Operation] = deque()
        self._thread: SenderThread | None = None

    @property
    def running(self) -> bool:
        """Between `start` and `close`."""
        return self._thread is not None

    @property
    def queued(self) -> int:
        """Records and operations waiting in memory."""
        return len(self._queue)

    @property
    def created(self) -> threading.Event:
        """Set once the server has the run of this start: commands may be polled."""
        thread = self._thread
        return thread.created if thread is not None else threading.Event()

    # -- what to send -----------------------------------------------------------------------

    def put_record(self, record: Record) -> None:
        """Queue a record; a full batch wakes the thread to send it now."""
        self._queue.append(record)
        thread = self._thread  # read once: close() may clear it from another thread
        if len(self._queue) >= RECORDS_A_POST and thread is not None:
            thread.wake.set()

    def put_op(self, op: Operation, urgent: bool = False) -> None:
        """Queue an operation after everything queued so far; `urgent` wakes the thread to
        send it now. While the sender runs, an `Ack` is on disk (in the spool file, and
        sent from there) before this returns, unless the disk refuses it: a crash must not
        lead a resumed run to apply its command twice."""
        thread = self._thread
        if isinstance(op, Ack) and thread is not None and thread.journal(op.as_op()):
            return
        self._queue.append(op)
        if urgent and thread is not None:
            thread.wake.set()

    # -- running ----------------------------------------------------------------------------

    def start(
        self,
        create: CreateRun,
        connect: Callable[[], httpx.Client],
        spool: SpoolFile,
        backlog: list[Path],
        flush_interval: float,
        prepare: Callable[[], None] = lambda: None,
    ) -> None:
        """Begin delivering, `create` first: then what was queued, then the `backlog` of
        spool files earlier runs left for this server. `prepare` runs on the thread before
        it sends anything (what `create`'s body reads); `connect` makes its HTTP client."""
        if self._thread is not None:
            return
        self._queue.appendleft(create)
        self._thread = SenderThread(
            connect, self.run_id, self._queue, spool, self._on_commands, self._notify, flush_interval, backlog, prepare
        )
        self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` s until everything queued before the call is delivered
        (older spool files too); True when it is, or when the sender is not running."""
        thread = self._thread
        return True if thread is None else thread.flush(timeout)

    def close(self, timeout: float) -> Unsent | None:
        """Deliver for up to `timeout` s, then stop; what is left goes to the spool file.
        None when all was delivered, or the sender was not running."""
        thread, self._thread = self._thread, None
        if thread is None:
            return None
        records, others = thread.close(timeout)
        return Unsent(records, others, thread.spool.path) if records or others else None
