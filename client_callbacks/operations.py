"""What a client hands its sender: records, and the operations on the run.

A record is a dict already in its wire form (`seq`, `scope`, `step`, `epoch`,
`wall_time`, `metrics`): it is made on the training's hot path and sent as it is, many to
a log request. The other operations are small typed values, each turned by `as_op()` into
its wire form, the dict that the spool file stores and `transport.send` carries out (see
`spool` for the format).

Each record's `seq` is `writer << WRITER_BITS | counter`, with a random writer id per
client: two processes logging to one run, or a clock that steps back, never make distinct
records look like one. Writer 0 is the server's own (RemoteMonitor posts).
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .wire import MAX_MESSAGE, MAX_WRITER, WRITER_BITS

Record = dict[str, Any]  # one record, as a log request carries it
Op = dict[str, Any]  # one operation, as the spool stores it and `transport.send` takes it


@dataclass(frozen=True)
class CreateRun:
    """Create the run, or with `resume` set an ended one running again. `body` builds the
    request when the sender takes it, so that it holds what was read meanwhile (the run's
    context, read on the sender's thread)."""

    body: Callable[[], dict[str, Any]]
    resume: bool = True

    def as_op(self) -> Op:
        return {"op": "create", "body": self.body(), "resume": self.resume}


@dataclass(frozen=True)
class Patch:
    """Change the run: its `status` (`paused`, `running`, or how it ended, with a
    `reason`), or what can be steered (`controls`)."""

    status: str | None = None
    reason: str | None = None
    controls: dict[str, Any] | None = None

    def as_op(self) -> Op:
        body: dict[str, Any] = {}
        if self.status is not None:
            body["status"] = self.status
        if self.reason:
            body["reason"] = self.reason[:MAX_MESSAGE]
        if self.controls is not None:
            body["controls"] = self.controls
        return {"op": "patch", "body": body}


@dataclass(frozen=True)
class Ack:
    """Acknowledge command `command_id`: `applied`, `failed` or `cancelled`."""

    command_id: int
    status: str
    message: str | None = None
    step: int | None = None

    def as_op(self) -> Op:
        body: dict[str, Any] = {"status": self.status}
        if self.message:
            body["message"] = self.message[:MAX_MESSAGE]
        if self.step is not None:
            body["step"] = self.step
        return {"op": "ack", "id": self.command_id, "body": body}


Operation = CreateRun | Patch | Ack


def new_writer() -> int:
    """A random writer id in [1, MAX_WRITER]: with a WRITER_BITS counter below it, seqs stay
    int64. From the system's generator: the training's `random` state stays untouched."""
    return random.SystemRandom().randint(1, MAX_WRITER)


class Stamper:
    """Makes a client's records: each gets the next seq of this client's writer id and the
    time it was made. Safe from several threads at once (`itertools.count` is atomic)."""

    def __init__(self) -> None:
        self.writer = new_writer()
        self._seq = itertools.count(self.writer << WRITER_BITS)

    def record(self, scope: str, step: int, metrics: dict[str, Any], epoch: int | None) -> Record:
        """Values become floats (NaN and ±Inf included); values that are not numbers are left out."""
        try:
            values = {k: float(v) for k, v in metrics.items()}
        except (TypeError, ValueError):
            values = _numbers(metrics)
        return {
            "seq": next(self._seq),
            "scope": scope,
            "step": step,
            "epoch": epoch,
            "wall_time": time.time(),
            "metrics": values,
        }


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    values = {}
    for key, value in metrics.items():
        try:
            values[key] = float(value)
        except (TypeError, ValueError):
            continue
    return values
