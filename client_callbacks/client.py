"""MonitorClient: the framework-free core of the fitwatch client.

`log()` is the only thing on the caller's hot path: it stamps a record and appends it to
a deque, a few microseconds with no lock and no I/O, safe from several threads at once.
A sender thread delivers records in batches (see `sender`), a poller thread long-polls for
commands (see `poller`), and the caller takes the commands from `commands` when it is safe
to apply them. Nothing the network does raises into the caller: problems become one
`FitwatchWarning` each.

Each record's `seq` is `writer << 32 | counter`, with a random writer id per client: two
processes logging to one run, or a clock that steps back, never make distinct records
look like one. Writer 0 is the server's own (RemoteMonitor posts).
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import os
import random
import sys
import threading
import time
import uuid
import warnings
from collections import deque
from pathlib import Path
from typing import Any, Self

from .context import run_context
from .inbox import Inbox
from .poller import Poller
from .sender import Sender
from .spool import SpoolFile, acked_in, default_dir, leftovers, normalize_url
from .system import SystemSampler
from .transport import http_client

DEFAULT_URL = "http://127.0.0.1:8000"
REASON_MAX = 2000
SAMPLER_JOIN_S = 5.0
WRITER_BITS = 32


def new_writer() -> int:
    """A random writer id in [1, 2**31): with a 32-bit counter below it, seqs stay int64."""
    return random.SystemRandom().randrange(1, 2**31)


class FitwatchWarning(UserWarning):
    """Something kept fitwatch from delivering; training is not affected."""


class MonitorClient:
    """Streams records of one run to a fitwatch server and receives its commands.

    Args:
        url: the server, default `FITWATCH_URL` or `http://127.0.0.1:8000`.
        run_id: the run's id (`[A-Za-z0-9_.-]{1,64}`); a new uuid4 hex when None.
            Reusing an id continues that run.
        run_name: shown on the dashboard; the server uses the id when None.
        project: default `FITWATCH_PROJECT` or `default`.
        config: JSON-able dict stored with the run.
        token: bearer token, default `FITWATCH_TOKEN`.
        flush_interval: seconds between deliveries (sooner when 1,000 records wait).
        poll_interval: pause between command polls that bring nothing new; 0 turns the
            poller off (commands then arrive only with the answers to log requests).
        flush_timeout: seconds `close()` keeps trying to deliver before it spools the rest.
        spool_dir: folder for undelivered records, default `FITWATCH_SPOOL_DIR` or
            `~/.cache/fitwatch/spool`.
        timeout: seconds an HTTP request may take.
        system_interval: seconds between samples of the process and machine (CPU, memory,
            GPUs) in the `system` scope; None turns sampling off.

    Example:

    ```python
    with MonitorClient(run_name="sweep-3") as client:
        for step in range(100):
            client.log("batch", step, {"loss": 1 / (step + 1)})
    ```
    """

    def __init__(
        self,
        url: str | None = None,
        run_id: str | None = None,
        run_name: str | None = None,
        project: str | None = None,
        config: dict[str, Any] | None = None,
        token: str | None = None,
        flush_interval: float = 0.5,
        poll_interval: float = 1.0,
        flush_timeout: float = 10.0,
        spool_dir: str | os.PathLike | None = None,
        timeout: float = 10.0,
        system_interval: float | None = 10.0,
    ) -> None:
        self.url = normalize_url(url or os.environ.get("FITWATCH_URL") or DEFAULT_URL)
        self.run_id = run_id or uuid.uuid4().hex
        self.run_name = run_name
        self.project = project or os.environ.get("FITWATCH_PROJECT") or "default"
        self.config = dict(config or {})
        self.token = token or os.environ.get("FITWATCH_TOKEN") or None
        self.flush_interval = flush_interval
        self.poll_interval = poll_interval
        self.flush_timeout = flush_timeout
        self.spool_dir = Path(spool_dir) if spool_dir is not None else default_dir()
        self.timeout = timeout
        if system_interval is not None and not system_interval > 0:
            raise ValueError(f"system_interval must be > 0 seconds or None, got {system_interval}")
        self.system_interval = system_interval
        self._samples = itertools.count()  # the system scope's steps, across starts
        self._sampler: SystemSampler | None = None
        self._inbox = Inbox(self.ack)
        self.writer = new_writer()
        self._seq = itertools.count(self.writer << WRITER_BITS)
        self._queue: deque[dict[str, Any]] = deque()
        self._notices: deque[str] = deque()
        self._warned: set[str] = set()
        self._sender: Sender | None = None
        self._poller: Poller | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(
        self, config: dict[str, Any] | None = None, resume: bool = True, context: dict[str, Any] | None = None
    ) -> None:
        """Create the run (or, with `resume`, set an ended one running again) and start
        delivering; returns at once. `config` adds to the run's config; the config given
        to the constructor wins where both have a key. The config's `context` says where
        the run ran (`context.run_context()`, plus `context`)."""
        if self._sender is not None:
            return
        given, extra = {**(config or {}), **self.config}, dict(context or {})
        found: dict[str, Any] = {}
        cwd, argv = os.getcwd(), list(sys.argv)  # as they are now: the training may change them

        def read_context() -> None:
            """On the sender's thread, before it sends: git may take seconds, the training
            does not wait for it, and no one waits for it under the sender's lock."""
            try:
                found.update(run_context(cwd, argv))
            except Exception:  # where it ran is never worth the run
                pass

        def body() -> dict[str, Any]:
            """The create request, with the context read so far: none when a close() gives
            up and spools the run before it was read."""
            made = {"id": self.run_id, "project": self.project}
            made["config"] = {"context": {**found, **extra}, **given}
            if self.run_name:
                made["name"] = self.run_name
            return made

        self._queue.appendleft({"op": "create", "body": body, "resume": resume})
        # Commands left from an earlier start were cancelled when that run ended.
        self._inbox.clear()
        backlog = leftovers(self.spool_dir, self.url)
        # A process that crashed after applying a command kept its ack on disk: never apply it again.
        self._inbox.seen |= acked_in(backlog, self.run_id)
        spool = SpoolFile(self.spool_dir / f"{self.run_id}-{uuid.uuid4().hex[:8]}.jsonl", self.url, self.run_id)
        connect = functools.partial(http_client, self.url, self.token, self.timeout)
        self._sender = Sender(
            connect,
            self.run_id,
            self._queue,
            spool,
            self._receive,
            self._notify,
            self.flush_interval,
            prepare=read_context,
        )
        self._sender.adopt(backlog)
        self._sender.start()
        if self.poll_interval > 0:
            self._start_poller(self.poll_interval)
        if self.system_interval is not None:
            self._sampler = SystemSampler(self._log_sample, self.system_interval)
            self._sampler.start()

    def _log_sample(self, sample: dict[str, float]) -> None:
        self._record("system", next(self._samples), sample, None)  # warnings are the caller's to see

    def _stop_sampler(self) -> None:
        """No sample after this: none may follow the run's end. A sampler stuck in a GPU
        driver is left behind after a few seconds, not waited for."""
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler.stop()
            sampler.join(SAMPLER_JOIN_S)

    def _start_poller(self, interval: float) -> None:
        connect = functools.partial(http_client, self.url, self.token, self.timeout)
        self._poller = Poller(connect, self.run_id, self._receive, interval, self._sender.created)
        self._poller.start()

    def end(self, status: str, reason: str | None = None) -> None:
        """Record how the run ended: `finished`, `stopped`, `failed` or `interrupted`."""
        self._stop_sampler()
        body: dict[str, Any] = {"status": status}
        if reason:
            body["reason"] = reason[:REASON_MAX]
        self._queue.append({"op": "patch", "body": body})

    def flush(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` s (default `flush_timeout`) until everything is delivered."""
        if self._sender is None:
            return True
        return self._sender.flush(self.flush_timeout if timeout is None else timeout)

    def close(self, timeout: float | None = None) -> Path | None:
        """Deliver for up to `timeout` s, then stop; the spool file if anything is left in it."""
        self._stop_sampler()
        sender, self._sender = self._sender, None
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        if sender is None:
            return None
        sender.stopping = True
        if sender.flush(self.flush_timeout if timeout is None else timeout):
            records = others = 0
        else:
            # What is unsent goes to the spool; a thread stuck in a request exits when it returns.
            records, others = sender.abandon()
        self.report()
        if not (records or others):
            return None
        what = f"{records} records" + (
            f" and {others} other operations (the run's end, command acks)" if others else ""
        )
        warn(
            f"fitwatch: {what} of run {self.run_id} could not be delivered to {self.url}; they are "
            f"kept in {sender.spool.path}. Upload them with: fitwatch sync {sender.spool.path}"
        )
        return sender.spool.path

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end("interrupted", "KeyboardInterrupt")
        else:
            self.end("failed", describe_error(exc))
        self.close()

    # -- the hot path ---------------------------------------------------------------------

    def log(self, scope: str, step: int, metrics: dict[str, Any], epoch: int | None = None) -> None:
        """Queue one record: `scope` is `batch`, `epoch`, `eval` (or `system`, the samples'
        own); values become floats (NaN and ±Inf included); values that are not numbers are
        left out."""
        self._record(scope, step, metrics, epoch)
        if self._notices and user_stacklevel() is not None:  # else a later call shows them
            self.report()

    def _record(self, scope: str, step: int, metrics: dict[str, Any], epoch: int | None) -> None:
        try:
            values = {k: float(v) for k, v in metrics.items()}
        except (TypeError, ValueError):
            values = _numbers(metrics)
        self._queue.append(
            {
                "seq": next(self._seq),
                "scope": scope,
                "step": step,
                "epoch": epoch,
                "wall_time": time.time(),
                "metrics": values,
            }
        )
        sender = self._sender  # read once: close() may clear it from another thread
        if len(self._queue) >= 1000 and sender is not None:
            sender.wake.set()

    def ack(self, command_id: int, status: str, message: str | None = None, step: int | None = None) -> None:
        """Acknowledge a command `applied`, `failed` or `cancelled`. While the client runs,
        the ack is on disk before this returns (unless the disk refuses it), so a crash
        cannot lead a resumed run to apply the command twice; otherwise it waits in memory
        like a record."""
        body: dict[str, Any] = {"status": status}
        if message:
            body["message"] = message[:REASON_MAX]
        if step is not None:
            body["step"] = step
        op = {"op": "ack", "id": command_id, "body": body}
        sender = self._sender
        if sender is None or not sender.journal(op):
            self._queue.append(op)
            if sender is not None:
                sender.wake.set()

    @property
    def commands(self) -> Inbox:
        """The commands received and not yet taken (true when there are any)."""
        return self._inbox

    def take_commands(
        self, step: int | None = None, epoch: int | None = None, epoch_start: bool = False
    ) -> list[dict[str, Any]]:
        """The commands due now, oldest first; each id comes once. Apply them, then `ack()`
        each. Pass the caller's global `step` (and `epoch`, with `epoch_start` at its first
        batch) to have commands scheduled with `at` held until exactly there; without a
        step, such commands are acknowledged `failed`. A command cancelled before it is
        taken never comes."""
        return self._inbox.take(step, epoch, epoch_start)

    def wait_for_commands(self, timeout: float) -> bool:
        """Block up to `timeout` s until a command arrives (no busy loop); whether one did.
        Polls for commands meanwhile even when `poll_interval` is 0."""
        if self._poller is None and self._sender is not None:
            self._start_poller(self.poll_interval or 1.0)
        return self._inbox.wait(timeout)

    def set_status(self, status: str) -> None:
        """Tell the server the run is `paused` or `running` again (in order with the records)."""
        self._queue.append({"op": "patch", "body": {"status": status}})
        if self._sender is not None:
            self._sender.wake.set()

    def set_controls(self, controls: dict[str, Any]) -> None:
        """Publish what can be steered: `{"params": {...}, "actions": [...], "checkpoint_dir": ...}`."""
        self._queue.append({"op": "patch", "body": {"controls": controls}})

    @property
    def buffered(self) -> int:
        """Records and requests waiting in memory."""
        return len(self._queue)

    # -- from the threads -----------------------------------------------------------------

    def _receive(self, commands: list[dict[str, Any]]) -> int:
        return self._inbox.receive(commands)

    def _notify(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            self._notices.append(message)

    def report(self) -> None:
        """Show, as warnings on the calling thread, what the threads ran into. Several
        threads may call it at once (Keras' async batch-end hooks)."""
        while True:
            try:
                message = self._notices.popleft()
            except IndexError:
                return
            warn(message)


def warn(message: str) -> None:
    """A FitwatchWarning shown at the user's line that led here (see `user_stacklevel`)."""
    level = user_stacklevel()
    try:
        warnings.warn(message, FitwatchWarning, stacklevel=1 if level is None else level)
    except Exception:  # warnings turned into errors must not break the training
        pass


def user_stacklevel() -> int | None:
    """The `stacklevel` for a `warnings.warn` in the caller that shows the first line of
    the stack outside fitwatch, Keras and the threads that run Keras' hooks: the user's
    `fit` or `log()` call. None when this thread runs no code of the user's (a Keras worker
    thread, an exit handler)."""
    library = _library()
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(library):
        frame, level = frame.f_back, level + 1
    return None if frame is None else level


def _library() -> tuple[str, ...]:
    """Where the code between a user's call and our warnings lives: ours, Keras', and the
    thread pool that runs Keras' async hooks."""
    places = [os.path.dirname(__file__) + os.sep, threading.__file__]
    places.append(os.path.dirname(concurrent.futures.__file__) + os.sep)
    keras = sys.modules.get("keras")
    if getattr(keras, "__file__", None):
        places.append(os.path.dirname(keras.__file__) + os.sep)
    return tuple(places)


def describe_error(error: BaseException) -> str:
    """`Type: message`, or the type alone when the message is empty."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    values = {}
    for key, value in metrics.items():
        try:
            values[key] = float(value)
        except (TypeError, ValueError):
            continue
    return values
