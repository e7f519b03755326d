"""How a Keras training takes commands: at each batch edge, on the training thread.

`Steering.steer` takes the commands due at this step from the client (scheduled ones are
held there until their step), puts JAX's live state back into the variables, runs each
through the handler table and acknowledges it once. A pause holds the training thread
right there, waiting on the client's inbox (no busy loop) and taking commands as they
come, until `resume`, `stop_training` or its timeout; the client keeps polling, which
keeps the run alive on the server. `controls()` is what the run reports as steerable.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

from .client import MonitorClient
from .handlers import HANDLERS, Context, Refused, sync_state
from .notices import describe_error, warn
from .optimizers import current_lr, idle, model_optimizers, schedule_of

LONGEST_WAIT = 3600.0  # seconds one wait for a command may last while paused


class Steering:
    def __init__(
        self,
        client: MonitorClient,
        knobs: dict[str, Any] | None,
        actions: dict[str, Callable[[keras.Model, int], Any]] | None,
        checkpoint_dir: str | Path | None,
        lr_changed: Callable[[int], None],
    ) -> None:
        self.client = client
        self.knobs = dict(knobs or {})
        if "learning_rate" in self.knobs:
            raise ValueError("'learning_rate' is the optimizer's; name the knob otherwise")
        self.actions = dict(actions or {})
        self._checkpoint_dir = checkpoint_dir
        self.lr_changed = lr_changed
        self.model: keras.Model | None = None
        self.stopped_by: tuple[dict[str, Any], int] | None = None  # (command, last step run) of a stop
        self._stopping: list[tuple[dict[str, Any], int]] = []  # (command, step) of stops not yet acked
        self._stop_lock = threading.Lock()
        self._paused_until: float | None = None  # time.monotonic() deadline, inf for none
        self._live_knobs: set[str] = set()
        self._reported: dict[str, Any] | None = None

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self._checkpoint_dir or Path("checkpoints") / self.client.run_id).resolve()

    @property
    def paused(self) -> bool:
        return self._paused_until is not None

    def begin(self, model: keras.Model) -> None:
        """A fit starts: find which knobs a compiled step reads, and report the controls."""
        self.model = model
        self.stopped_by = None
        self._stopping = []
        self._paused_until = None
        if keras.backend.backend() == "jax":
            tracked = {id(v) for v in model.variables}
            self._live_knobs = {name for name, v in self.knobs.items() if id(v) in tracked}
            for name in sorted(set(self.knobs) - self._live_knobs):
                warn(
                    f"fitwatch: knob {name!r} is not a variable of the model; on JAX a compiled step reads it as "
                    "a constant, so set_param cannot change it (create it with add_weight() on a layer)"
                )
        else:
            self._live_knobs = set(self.knobs)
        self.report_controls()

    def knob_takes_effect(self, name: str) -> bool:
        return name in self._live_knobs

    # -- commands ----------------------------------------------------------------------------

    def steer(self, step: int, epoch: int | None, epoch_start: bool) -> None:
        """Apply what is due at this batch edge; stay here while paused."""
        self._apply(step, epoch, epoch_start)
        if self._paused_until is None:
            return
        self.client.set_status("paused")
        while self._paused_until is not None and not self.model.stop_training:
            left = self._paused_until - time.monotonic()
            if left <= 0:
                break
            if self.client.wait_for_commands(min(left, LONGEST_WAIT)):
                self._apply(step, epoch, epoch_start)
        self._paused_until = None
        self.client.set_status("running")

    def _apply(self, step: int, epoch: int | None, epoch_start: bool) -> None:
        commands = self.client.take_commands(step, epoch, epoch_start)
        if commands:
            sync_state(self.model)
        for command in commands:
            handler = HANDLERS.get(command["type"])
            try:
                if handler is None:
                    raise Refused(f"this training does not know {command['type']!r} commands")
                message = handler(Context(self, step, command), command["args"])
            except Refused as exc:
                self.client.ack(command["id"], "failed", str(exc), step)
            except Exception as exc:  # an action that raised: say so, and train on
                self.client.ack(command["id"], "failed", describe_error(exc), step)
            else:
                if message is not None:
                    self.client.ack(command["id"], "applied", message, step)

    @property
    def stop_pending(self) -> bool:
        return bool(self._stopping)

    def stop(self, command: dict[str, Any], step: int) -> None:
        """Stop after the batch that starts at `step`; acked by `batch_ended` or `settle`."""
        self.model.stop_training = True
        with self._stop_lock:
            self._stopping.append((command, step))

    def batch_ended(self, last_step: int) -> None:
        """A batch ended at `last_step` (the last of several with `steps_per_execution`):
        the stops taken at or before its start are acked, naming it, the last step that
        ran. Safe from any thread (Keras's batch-end hooks)."""
        with self._stop_lock:
            done = [(command, step) for command, step in self._stopping if step <= last_step]
            self._stopping = [pending for pending in self._stopping if pending not in done]
        self._ack_stops(done, last_step)

    def settle(self, last_run: int) -> None:
        """The epoch or the fit ended with stops not acked (taken at a batch that never ran:
        the data ran out, or fit raised): ack them, naming the last step that ran."""
        with self._stop_lock:
            done, self._stopping = self._stopping, []
        self._ack_stops(done, last_run)

    def _ack_stops(self, stops: list[tuple[dict[str, Any], int]], last: int) -> None:
        for command, _ in stops:
            if self.stopped_by is None:
                self.stopped_by = command, last
            message = f"training stops after step {last}" if last >= 0 else "training stops before its first step"
            self.client.ack(command["id"], "applied", message, max(last, 0))

    def pause(self, timeout: float | None) -> None:
        self._paused_until = time.monotonic() + (timeout if timeout else math.inf)

    def resume(self) -> None:
        self._paused_until = None

    # -- what can be steered -----------------------------------------------------------------

    def controls(self) -> dict[str, Any]:
        """The params (`learning_rate` when the model has one optimizer and its rate can be
        set), each optimizer's rate when it has several (and whether the step uses it), the
        actions and the checkpoint folder."""
        params: dict[str, float] = {}
        found = model_optimizers(self.model)
        unused = idle(found) if len(found) > 1 else set()
        rates = [
            {
                "name": named.name,
                "learning_rate": _finite_or_none(current_lr(named.optimizer)),
                "settable": schedule_of(named.optimizer) is None,
                "used": named.name not in unused,
            }
            for named in found
        ]
        if len(rates) == 1 and rates[0]["settable"] and rates[0]["learning_rate"] is not None:
            params["learning_rate"] = rates[0]["learning_rate"]
        for name, knob in self.knobs.items():
            params[name] = float(keras.ops.convert_to_numpy(knob))
        controls = {"params": params, "actions": sorted(self.actions), "checkpoint_dir": str(self.checkpoint_dir)}
        if len(rates) > 1:
            controls["optimizers"] = rates
        return controls

    def report_controls(self) -> None:
        """Tell the server what can be steered, when it changed since the last time."""
        controls = self.controls()
        if controls != self._reported:
            self._reported = controls
            self.client.set_controls(controls)


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
