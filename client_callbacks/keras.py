"""RemoteCallback: a thin Keras 3 adapter over `MonitorClient`.

Batch-end hooks only count the step, queue a record and ack a stop once its batch has
ended, so the callback is marked `async_safe`: Keras then keeps dispatching batch-end
hooks to its worker threads (on backends that allow it, JAX) and the training loop does
not wait on a device sync each step. Those hooks may run on several threads at once and
finish out of order. Everything that touches the model (commands, see `steering`; the
learning rate; `stop_training`) happens in the batch-begin and epoch hooks, which Keras
always calls on the training thread. What the callback says about the fit besides its
records (the run's config, why it ended) is in `fitinfo`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import keras

from .client import MonitorClient
from .fitinfo import BUILTIN, fit_callbacks, keras_context, outcome, run_config
from .optimizers import lr_series, model_optimizers, steps_taken
from .runguard import RunGuard
from .steering import Steering


class RemoteCallback(keras.callbacks.Callback):
    """Streams every batch and epoch to a fitwatch server and obeys its commands.

    Args:
        url: the server, default `FITWATCH_URL` or `http://127.0.0.1:8000`.
        batch_frequency: log every n-th train batch (the global step's multiples of n).
        knobs: parameters a `set_param` command may set, by name: `keras.Variable`s that
            the model or the loss reads, so a new value takes effect in compiled steps.
            On JAX a knob must be a variable of the model (a layer's `add_weight`).
        actions: functions an `action` command may call by name, as `fn(model, step)`;
            what they return is the command's message.
        checkpoint_dir: where `checkpoint` commands save (`<name or step-N>.keras`),
            default `./checkpoints/<run_id>/`.
        **client_options: the `MonitorClient` options, by name:
            run_name: shown on the dashboard; default the model's name.
            project: default `FITWATCH_PROJECT` or `default`.
            run_id: reuse an id to continue a run; a new uuid4 hex when None.
            config: hyperparameters to store with the run, beside what the callback
                records itself (fit parameters, optimizer config, parameter count) and
                where the run ran (`context`: host, versions, backend, devices, command
                line, git commit).
            token: bearer token, default `FITWATCH_TOKEN`.
            flush_interval: seconds between deliveries (default 0.5).
            poll_interval: pause between command polls that bring nothing new (default
                1.0); 0 turns long-polling off (commands then ride on the answers to log
                requests).
            flush_timeout: seconds the end of `fit` waits for delivery before it leaves
                the rest in the spool for `fitwatch sync` (default 10).
            spool_dir: folder for undelivered records, default `FITWATCH_SPOOL_DIR` or
                `~/.cache/fitwatch/spool`.
            timeout: seconds an HTTP request may take (default 10).
            system_interval: seconds between samples of the process and machine (CPU,
                memory, GPUs) in the `system` scope, taken off the training thread
                (default 10); None: off.

    Example:

    ```python
    kl_weight = keras.Variable(1.0, trainable=False)  # read by the loss
    model.fit(x, y, epochs=10, callbacks=[RemoteCallback(run_name="vae", knobs={"kl_weight": kl_weight})])
    ```
    """

    async_safe = True

    def __init__(
        self,
        url: str | None = None,
        *,
        batch_frequency: int = 1,
        knobs: dict[str, keras.Variable] | None = None,
        actions: dict[str, Callable[[keras.Model, int], Any]] | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        **client_options: Any,
    ) -> None:
        super().__init__()
        if batch_frequency < 1:
            raise ValueError(f"batch_frequency must be >= 1, got {batch_frequency}")
        self.client = MonitorClient(url, **client_options)
        self.batch_frequency = batch_frequency
        self.spool_file = None  # where the last fit left what it could not deliver
        self._next_step = 0  # global step of the next train batch: the number of batches run
        self._step_base = 0
        self._epoch: int | None = None
        self._epoch_logs: tuple[int, dict, dict[str, float]] | None = None  # (epoch, logs, rates) not yet logged
        self._iterations_at_begin: int | None = None  # the optimizer's steps when the epoch began
        self._lr: dict[str, float] = {}  # last values in the batch-scope `lr` series
        self._last_loss: tuple[int, float] | None = None  # (step, loss) of the latest batch
        self._batch_lock = threading.Lock()
        self.steering = Steering(self.client, knobs, actions, checkpoint_dir, self._record_lr)
        self._others: list[keras.callbacks.Callback] = []
        self._guard: RunGuard | None = None
        self._trained = False

    @property
    def run_id(self) -> str:
        return self.client.run_id

    # -- training -------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._others = [cb for cb in fit_callbacks() if cb is not self and not isinstance(cb, BUILTIN)]
        self._last_loss = None
        self._epoch_logs = None
        self._trained = True
        if not self.client.run_name:
            self.client.run_name = self.model.name
        self.client.start(config=run_config(self.model, self.params), context=keras_context())
        self.steering.begin(self.model)
        self._record_lr(self._next_step)
        self._guard = RunGuard(self.client, self.model, self.client.flush_timeout, before_end=self._ended_early)

    def on_epoch_begin(self, epoch, logs=None):
        self._log_epoch()
        self._epoch = epoch
        steps = self.params.get("steps")
        # Honours initial_epoch; a later fit on the same run carries on after the last step.
        self._step_base = max(epoch * steps, self._next_step) if steps else self._next_step
        several = getattr(self.model, "steps_per_execution", 1) > 1
        self._iterations_at_begin = (
            steps_taken(getattr(self.model, "optimizer", None)) if several and not steps else None
        )

    def on_train_batch_begin(self, batch, logs=None):
        # The batch may never run: with a dataset of unknown length, Keras begins one more
        # batch when the data has run out. Only a batch's end counts it as run.
        step = self._step_base + batch
        if self.client.commands:
            self.steering.steer(step, self._epoch, epoch_start=batch == 0)
        if batch == 0:
            self._record_lr(step)  # a scheduler may have changed it at the epoch's start

    def on_train_batch_end(self, batch, logs=None):
        # May run on Keras's worker threads, several at once, finishing out of order: count
        # the steps run, queue the record, ack a stop; nothing else. `batch` is the last step
        # of the batch (of several, with steps_per_execution).
        step = self._step_base + batch
        loss = logs.get("loss") if logs else None
        with self._batch_lock:
            self._next_step = max(self._next_step, step + 1)
            if loss is not None and (self._last_loss is None or step >= self._last_loss[0]):
                self._last_loss = (step, loss)
        if logs and step % self.batch_frequency == 0:
            self.client.log("batch", step, logs, self._epoch)
        if self.steering.stop_pending:
            self.steering.batch_ended(step)

    def on_epoch_end(self, epoch, logs=None):
        self._count_partial_call()
        # Every callback gets this same dict and later ones add to it (LearningRateScheduler
        # its `learning_rate`): it is logged at the next hook, as History ends up with it.
        # The rates are the ones this epoch ran with.
        self._epoch_logs = epoch, logs if logs is not None else {}, lr_series(model_optimizers(self.model))
        self.steering.settle(self._next_step - 1)  # a stop taken at a batch that never ran
        self._record_lr(self._next_step)
        self.steering.report_controls()  # knobs the training changes itself

    def _count_partial_call(self) -> None:
        """With steps_per_execution and a dataset of unknown length, the epoch's last call
        may run fewer steps than Keras reports it ran (it cannot know): where the optimizer
        counted fewer steps, the next epoch starts after the steps it counted."""
        if self._iterations_at_begin is None:
            return
        now = steps_taken(getattr(self.model, "optimizer", None))
        ran = None if now is None else now - self._iterations_at_begin
        if ran is not None and 0 < ran < self._next_step - self._step_base:
            self._next_step = self._step_base + ran

    def _log_epoch(self) -> None:
        with self._batch_lock:  # the training thread, or the guard's when fit raised
            pending, self._epoch_logs = self._epoch_logs, None
        if pending is not None:
            epoch, logs, rates = pending
            self.client.log("epoch", epoch, {**logs, **rates}, epoch)

    def _ended_early(self) -> None:
        """`fit` raised or the process is exiting: what the training did until then is sent
        before the run's end (the last epoch's record, the ack of a stop taken)."""
        self._log_epoch()
        self.steering.settle(self._next_step - 1)
        self._guard = None

    def on_train_end(self, logs=None):
        self._log_epoch()
        self.steering.settle(self._next_step - 1)
        if self._guard is None or not self._guard.settle():
            return  # the run was already ended as failed or interrupted
        self._guard = None
        stopped_by = self.steering.stopped_by
        status, reason = outcome(self.model, self.params, stopped_by, self._others, self._last_loss, self._epoch)
        self.client.end(status, reason)
        self.spool_file = self.client.close()

    # -- evaluate() -------------------------------------------------------------------------

    def on_test_begin(self, logs=None):
        if self._guard is None:  # a standalone evaluate(), not validation inside fit
            if not self.client.run_name:
                self.client.run_name = self.model.name
            self.client.start(config=run_config(self.model, self.params), resume=False, context=keras_context())

    def on_test_end(self, logs=None):
        if self._guard is not None:
            return  # validation: its values arrive with the epoch logs as val_*
        self.client.log("eval", self._next_step, logs or {}, self._epoch)
        if not self._trained:
            self.client.end("finished", "evaluate() done")
        self.spool_file = self.client.close()

    # -- the learning rate --------------------------------------------------------------------

    def _record_lr(self, step: int) -> None:
        """Add a point to the batch-scope `lr` series (`lr.NAME` for each of several
        optimizers) when a rate has changed, whoever changed it (a command,
        LearningRateScheduler, ReduceLROnPlateau)."""
        rates = lr_series(model_optimizers(self.model))
        changed = {name: rate for name, rate in rates.items() if self._lr.get(name) != rate}
        if changed:
            self._lr.update(changed)
            self.client.log("batch", step, changed, self._epoch)
            self.steering.report_controls()
