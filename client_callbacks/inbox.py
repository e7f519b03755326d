"""The commands a client has received and not yet handed to the caller.

Polls and log answers bring every command the server holds unacknowledged, again and
again; each id is handed over once. A command with `at` (`{"step": N}` or `{"epoch": N}`)
is held until the caller's step reaches it; one whose step has passed is acknowledged
`failed`. A cancel asked for a command still here withdraws it (acknowledged
`cancelled`); one already handed over stays with the caller, whose ack says what it did.
The inbox only decides these acks: it returns them (`Answer`) for its owner to send.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, NamedTuple

Command = dict[str, Any]
WITHDRAWN = "cancelled before the training applied it"


class Answer(NamedTuple):
    """An ack the inbox decided on, for a command the caller never gets."""

    command_id: int
    status: str  # `cancelled` or `failed`
    message: str
    step: int | None = None


class Inbox:
    def __init__(self) -> None:
        self.new: deque[Command] = deque()  # arrived, not yet looked at by the caller
        self.held: list[Command] = []  # scheduled for a later step
        self.seen: set[int] = set()  # every id ever taken in (or acknowledged before)
        self.arrived = threading.Event()
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.new) or bool(self.held)

    def receive(self, commands: list[Command]) -> tuple[int, list[Answer]]:
        """Take in what a poll or a log answer brought: the number of new commands, and
        the acks of those withdrawn."""
        new = 0
        withdrawn = []
        with self._lock:
            for command in commands:
                if command["status"] not in ("pending", "delivered"):
                    continue
                cancel = command.get("cancel_requested_at") is not None
                if command["id"] not in self.seen:
                    self.seen.add(command["id"])
                    if cancel:
                        withdrawn.append(Answer(command["id"], "cancelled", WITHDRAWN))
                    else:
                        self.new.append(command)
                        new += 1
                elif cancel and self._drop(command["id"]):
                    withdrawn.append(Answer(command["id"], "cancelled", WITHDRAWN))
        if new:
            self.arrived.set()
        return new, withdrawn

    def _drop(self, command_id: int) -> bool:
        for waiting in (self.new, self.held):
            for command in waiting:
                if command["id"] == command_id:
                    waiting.remove(command)
                    return True
        return False

    def take(
        self, step: int | None = None, epoch: int | None = None, epoch_start: bool = False
    ) -> tuple[list[Command], list[Answer]]:
        """The commands due at `step` (the first batch of `epoch` when `epoch_start`),
        oldest first, and the acks of those that can never be applied where they ask;
        later ones stay held."""
        due, missed = [], []
        with self._lock:
            waiting = [(c, True) for c in self.held] + [(c, False) for c in self.new]
            self.new.clear()
            self.held = []
            for command, held in waiting:
                when = _when(command.get("at"), step, epoch, epoch_start, held)
                if when == "now":
                    due.append(command)
                elif when == "later":
                    self.held.append(command)
                else:
                    missed.append(Answer(command["id"], "failed", when, step))
        return sorted(due, key=lambda c: c["id"]), missed

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` s for a new command; whether one came."""
        self.arrived.clear()
        return bool(self.new) or self.arrived.wait(timeout)

    def clear(self) -> None:
        with self._lock:
            self.new.clear()
            self.held = []


def _when(at: dict[str, int] | None, step: int | None, epoch: int | None, epoch_start: bool, held: bool) -> str:
    """`now`, `later`, or why the command can never be applied where it asks. A held
    command is due at the first edge at or past its place; a new one must not be late."""
    if at is None:
        return "now"
    if step is None:
        return f"not applied: this training takes commands without a step, so it cannot hold one for {_place(at)}"
    if "step" in at:
        target = at["step"]
        if target == step or (held and target < step):
            return "now"
        return "later" if target > step else f"not applied: step {target} had passed (the training is at step {step})"
    if epoch is None:
        return f"not applied: this training has no epochs, so it cannot hold a command for {_place(at)}"
    target = at["epoch"]
    if (target == epoch and epoch_start) or (held and target <= epoch):
        return "now"
    if target > epoch:
        return "later"
    return f"not applied: epoch {target} had begun (the training is at step {step} of epoch {epoch})"


def _place(at: dict[str, int]) -> str:
    return " ".join(f"{k} {v}" for k, v in at.items())
