"""What `RemoteCallback` tells the server about a Keras fit, besides its records: at the
start the run's config (fit parameters, optimizers, parameter count) and what Keras adds
to where it ran; at the end how the fit ended and why (a stop command, EarlyStopping,
TerminateOnNaN, another callback).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import keras

from .optimizers import current_lr, jsonable, model_optimizers

# Callbacks Keras adds by itself; they never stop a training.
BUILTIN = (keras.callbacks.History, keras.callbacks.ProgbarLogger)

# How many frames up from a hook `fit_callbacks` looks for the CallbackList that called
# it: the hook, CallbackList's dispatch, and room for a wrapper or two.
HOOK_DEPTH = 6


def fit_callbacks() -> list[keras.callbacks.Callback]:
    """The callbacks of the running fit: call it from a hook, which the fit's
    CallbackList calls.

    Keras gives a callback no handle on the others: `CallbackList.set_model` hands each the
    model (and `model.history`), never the list, which lives in a local of `fit`. So it is
    read off the stack: the CallbackList is the `self` of a frame a little above the hook.
    An empty list when none is found (a hook called by hand): the reason a fit ended then
    names no callback."""
    frame = sys._getframe(1)
    for _ in range(HOOK_DEPTH):
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        if isinstance(owner, keras.callbacks.CallbackList):
            return list(owner.callbacks)
        frame = frame.f_back
    return []


def keras_context() -> dict[str, Any]:
    """What Keras adds to where a run ran: its backend and the devices it sees."""
    context: dict[str, Any] = {"backend": keras.backend.backend()}
    try:
        context["devices"] = keras.distribution.list_devices()
    except Exception:  # a backend without the distribution API
        pass
    return context


def run_config(model: keras.Model, params: dict[str, Any] | None) -> dict[str, Any]:
    """The fit's parameters, the model's name and size, and each optimizer's config."""
    config: dict[str, Any] = {
        "fit": jsonable(params or {}),
        "model": model.name,
    }
    try:
        config["parameters"] = int(model.count_params())
    except Exception:  # a subclassed model that is not built yet
        pass
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        config["optimizer"] = {"class": type(optimizer).__name__, **jsonable(optimizer.get_config())}
        if isinstance(config["optimizer"].get("learning_rate"), float):
            config["optimizer"]["learning_rate"] = current_lr(optimizer)
    found = model_optimizers(model)
    if len(found) > 1:
        config["optimizers"] = {
            named.name: {"class": type(named.optimizer).__name__, **jsonable(named.optimizer.get_config())}
            for named in found
        }
    return config


def outcome(
    model: keras.Model,
    params: dict[str, Any],
    stopped_by: tuple[dict[str, Any], int] | None,
    others: list[keras.callbacks.Callback],
    last_loss: tuple[int, float] | None,
    epoch: int | None,
) -> tuple[str, str]:
    """(status, reason) of a fit that reached its end: `stopped_by` a stop command (and
    the last step run), else stopped by one of the `others` callbacks, else done."""
    if stopped_by is not None:
        command, step = stopped_by
        issuer = command.get("issued_by") or ""
        by = f" (rule {issuer.removeprefix('rule:')})" if issuer.startswith("rule:") else ""
        return "stopped", f"stop command {command['id']}{by}: stopped after step {step}"
    if model.stop_training:
        return _stopped_by_callback(others, last_loss, epoch)
    epochs = params.get("epochs")
    return "finished", f"all {epochs} epochs done" if epochs else "fit done"


def _stopped_by_callback(
    others: list[keras.callbacks.Callback], last_loss: tuple[int, float] | None, epoch: int | None
) -> tuple[str, str]:
    for cb in others:
        if isinstance(cb, keras.callbacks.EarlyStopping) and cb.stopped_epoch > 0:
            return "finished", (
                f"EarlyStopping stopped training at epoch {cb.stopped_epoch + 1}: "
                f"{cb.monitor} did not improve for {cb.patience} epochs"
            )
    if last_loss is not None and not math.isfinite(last_loss[1]):
        step, loss = last_loss
        for cb in others:
            if isinstance(cb, keras.callbacks.TerminateOnNaN):
                return "failed", f"TerminateOnNaN stopped training: loss was {loss} at step {step}"
    names = sorted({type(cb).__name__ for cb in others})
    suspects = f" (one of: {', '.join(names)})" if names else ""
    return "finished", f"a callback set model.stop_training at epoch {(epoch or 0) + 1}{suspects}"
