"""What each command does to a training: one small handler per type.

A handler takes the context (the steering, its model, the global step) and the command's
args, changes the training, and returns the ack message. Raising `Refused` acknowledges
`failed` with its message; any other exception with its type and message, and the
training goes on. Taking commands when they are due, acking each once and syncing the
JAX state live once, in `Steering`, around this table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras

from .optimizers import current_lr, set_learning_rate

if TYPE_CHECKING:
    from .steering import Steering

CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class Refused(Exception):
    """The command cannot be applied in this training; the message says why."""


@dataclass
class Context:
    steering: Steering
    step: int
    command: dict[str, Any]

    @property
    def model(self) -> keras.Model:
        return self.steering.model


def stop_training(ctx: Context, args: dict[str, Any]) -> str:
    ctx.model.stop_training = True
    ctx.steering.stopped_by = ctx.command, ctx.step
    return f"training stops after step {ctx.step}"


def set_lr(ctx: Context, args: dict[str, Any]) -> str:
    if "factor" in args:
        old = current_lr(ctx.model.optimizer)
        if old is None:
            raise Refused("the optimizer has no learning rate to multiply")
        value = old * _finite(args["factor"], "factor")
        if value > args.get("at_most", math.inf):
            raise Refused(
                f"{old:.6g} x {args['factor']:g} = {value:.6g} is above the server's limit {args['at_most']:g}"
            )
        return _set_rate(ctx, value)
    return _set_rate(ctx, _finite(args["value"], "learning rate"))


def set_param(ctx: Context, args: dict[str, Any]) -> str:
    name, value = args["name"], _finite(args["value"], args["name"])
    if name == "learning_rate":
        return _set_rate(ctx, value)
    knobs = ctx.steering.knobs
    if name not in knobs:
        settable = ", ".join(ctx.steering.controls()["params"]) or "none"
        raise Refused(f"no settable param {name!r}; settable: {settable}")
    if not ctx.steering.knob_takes_effect(name):
        raise Refused(
            f"{name} is not a variable of the model, so a compiled JAX step reads it as a constant; "
            "create it with add_weight() on a layer to make it settable"
        )
    knob = knobs[name]
    old = float(keras.ops.convert_to_numpy(knob))
    knob.assign(keras.ops.cast(value, knob.dtype))
    ctx.steering.report_controls()
    return f"{name} {old:.6g} -> {value:.6g} at step {ctx.step}"


def pause(ctx: Context, args: dict[str, Any]) -> str:
    timeout = args.get("timeout")
    ctx.steering.pause(timeout)
    after = f"; resumes by itself after {timeout:g} s" if timeout else ""
    return f"paused at step {ctx.step}{after}"


def resume(ctx: Context, args: dict[str, Any]) -> str:
    if not ctx.steering.paused:
        raise Refused("the training was not paused")
    ctx.steering.resume()
    return f"resumed at step {ctx.step}"


def checkpoint(ctx: Context, args: dict[str, Any]) -> str:
    name = args.get("name") or f"step-{ctx.step}"
    folder = ctx.steering.checkpoint_dir
    path = (folder / f"{name}.keras").resolve()
    # The server checks the name too; a path from the network is never trusted.
    if not CHECKPOINT_NAME.fullmatch(name) or path.parent != folder:
        raise Refused(f"{name!r} is not a checkpoint name: letters, digits, '_', '.', '-', at most 64, no path")
    folder.mkdir(parents=True, exist_ok=True)
    ctx.model.save(path)
    return f"saved {path} at step {ctx.step}"


def action(ctx: Context, args: dict[str, Any]) -> str:
    fn = ctx.steering.actions.get(args["name"])
    if fn is None:
        registered = ", ".join(sorted(ctx.steering.actions)) or "none"
        raise Refused(f"no action {args['name']!r}; registered: {registered}")
    result = fn(ctx.model, ctx.step)
    return f"{args['name']} done at step {ctx.step}" if result is None else str(result)


HANDLERS: dict[str, Callable[[Context, dict[str, Any]], str]] = {
    "stop_training": stop_training,
    "set_lr": set_lr,
    "set_param": set_param,
    "pause": pause,
    "resume": resume,
    "checkpoint": checkpoint,
    "action": action,
}


def _set_rate(ctx: Context, value: float) -> str:
    if value <= 0:
        raise Refused(f"a learning rate must be > 0, got {value:g}")
    try:
        old = set_learning_rate(ctx.model.optimizer, value)
    except TypeError as exc:  # a schedule
        raise Refused(str(exc)) from None
    ctx.steering.lr_changed(ctx.step)
    return f"learning rate {old:.6g} -> {value:.6g} at step {ctx.step}"


def _finite(value: Any, what: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise Refused(f"{what} must be a finite number, got {value}")
    return number


def sync_state(model: keras.Model) -> None:
    """On JAX, a fit keeps the live values outside the variables between epochs: put them
    back, so that handlers read and set the real ones and the next step reads the change."""
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()
