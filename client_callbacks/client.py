"""MonitorClient: the framework-free core of the fitwatch client.

`log()` is the only thing on the caller's hot path: it stamps a record (see `operations`)
and queues it for the sender, a few microseconds with no lock and no I/O, safe from
several threads at once. A sender thread delivers records in batches (see `sender`), a
poller thread long-polls for commands (see `poller`), and the caller takes the commands
from `commands` when it is safe to apply them. Nothing the network does raises into the
caller: problems become one `FitwatchWarning` each (see `notices`).
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Self

from .context import run_context
from .inbox import Answer, Inbox
from .notices import Notices, describe_error, user_stacklevel, warn
from .operations import Ack, CreateRun, Patch, Stamper
from .poller import Poller
from .sender import Sender
from .spool import SpoolFile, acked_in, default_dir, leftovers
from .system import SystemSampler
from .transport import http_client, server_token, server_url
from .wire import DEFAULT_PROJECT, ENV_PROJECT

SAMPLER_JOIN_S = 5.0


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
        self.url = server_url(url)
        self.run_id = run_id or uuid.uuid4().hex
        self.run_name = run_name
        self.project = project or os.environ.get(ENV_PROJECT) or DEFAULT_PROJECT
        self.config = dict(config or {})
        self.token = server_token(token)
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
        self._inbox = Inbox()
        self._stamper = Stamper()
        self.writer = self._stamper.writer  # the high bits of this client's seqs
        self._notices = Notices()
        self._sender = Sender(self.run_id, self._receive, self._notices.add)
        self._poller: Poller | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(
        self, config: dict[str, Any] | None = None, resume: bool = True, context: dict[str, Any] | None = None
    ) -> None:
        """Create the run (or, with `resume`, set an ended one running again) and start
        delivering; returns at once. `config` adds to the run's config; the config given
        to the constructor wins where both have a key. The config's `context` says where
        the run ran (`context.run_context()`, plus `context`)."""
        if self._sender.running:
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

        # Commands left from an earlier start were cancelled when that run ended.
        self._inbox.clear()
        backlog = leftovers(self.spool_dir, self.url)
        # A process that crashed after applying a command kept its ack on disk: never apply it again.
        self._inbox.seen |= acked_in(backlog, self.run_id)
        self._sender.start(
            CreateRun(body, resume),
            connect=functools.partial(http_client, self.url, self.token, self.timeout),
            spool=SpoolFile(self.spool_dir / f"{self.run_id}-{uuid.uuid4().hex[:8]}.jsonl", self.url, self.run_id),
            backlog=backlog,
            flush_interval=self.flush_interval,
            prepare=read_context,
        )
        if self.poll_interval > 0:
            self._start_poller(self.poll_interval)
        if self.system_interval is not None:
            self._sampler = SystemSampler(self._log_sample, self.system_interval)
            self._sampler.start()

    def _log_sample(self, sample: dict[str, float]) -> None:
        # Warnings are the caller's to see: none is shown on the sampler's thread.
        self._sender.put_record(self._stamper.record("system", next(self._samples), sample, None))

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
        self._sender.put_op(Patch(status=status, reason=reason))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` s (default `flush_timeout`) until everything is delivered."""
        return self._sender.flush(self.flush_timeout if timeout is None else timeout)

    def close(self, timeout: float | None = None) -> Path | None:
        """Deliver for up to `timeout` s, then stop; the spool file if anything is left in it."""
        self._stop_sampler()
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        if not self._sender.running:
            return None
        unsent = self._sender.close(self.flush_timeout if timeout is None else timeout)
        self.report()
        if unsent is None:
            return None
        what = f"{unsent.records} records" + (
            f" and {unsent.others} other operations (the run's end, command acks)" if unsent.others else ""
        )
        warn(
            f"fitwatch: {what} of run {self.run_id} could not be delivered to {self.url}; they are "
            f"kept in {unsent.path}. Upload them with: fitwatch sync {unsent.path}"
        )
        return unsent.path

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
        self._sender.put_record(self._stamper.record(scope, step, metrics, epoch))
        if self._notices and user_stacklevel() is not None:  # else a later call shows them
            self.report()

    # -- commands -------------------------------------------------------------------------

    def ack(self, command_id: int, status: str, message: str | None = None, step: int | None = None) -> None:
        """Acknowledge a command `applied`, `failed` or `cancelled`. While the client runs,
        the ack is on disk before this returns (unless the disk refuses it), so a crash
        cannot lead a resumed run to apply the command twice; otherwise it waits in memory
        like a record."""
        self._sender.put_op(Ack(command_id, status, message, step), urgent=True)

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
        due, answers = self._inbox.take(step, epoch, epoch_start)
        self._answer(answers)
        return due

    def wait_for_commands(self, timeout: float) -> bool:
        """Block up to `timeout` s until a command arrives (no busy loop); whether one did.
        Polls for commands meanwhile even when `poll_interval` is 0."""
        if self._poller is None and self._sender.running:
            self._start_poller(self.poll_interval or 1.0)
        return self._inbox.wait(timeout)

    def set_status(self, status: str) -> None:
        """Tell the server the run is `paused` or `running` again (in order with the records)."""
        self._sender.put_op(Patch(status=status), urgent=True)

    def set_controls(self, controls: dict[str, Any]) -> None:
        """Publish what can be steered: `{"params": {...}, "actions": [...], "checkpoint_dir": ...}`."""
        self._sender.put_op(Patch(controls=controls))

    @property
    def buffered(self) -> int:
        """Records and requests waiting in memory."""
        return self._sender.queued

    # -- from the threads -----------------------------------------------------------------

    def _receive(self, commands: list[dict[str, Any]]) -> int:
        """What a poll or a log answer brought; the number of new commands."""
        new, withdrawn = self._inbox.receive(commands)
        self._answer(withdrawn)
        return new

    def _answer(self, answers: list[Answer]) -> None:
        for answer in answers:
            self.ack(*answer)

    def report(self) -> None:
        """Show, as warnings on the calling thread, what the threads ran into. Several
        threads may call it at once (Keras' async batch-end hooks)."""
        self._notices.show()
