"""What each command does to a training: one small handler per type.

A handler takes the context (the steering, its model, the global step) and the command's
args, changes the training, and returns the ack message (None: the steering acknowledges
it later, once it knows what the training did). Raising `Refused` acknowledges
`failed` with its message; any other exception with its type and message, and the
training goes on. Taking commands when they are due, acking each once and syncing the
JAX state live once, in `Steering`, around this table; what a handler may use of the
steering is `Steered`. The table names exactly the commands of the wire contract
(`wire.COMMAND_TYPES`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import keras

from .optimizers import Named, current_lr, idle, model_optimizers, schedule_of
from .wire import COMMAND_TYPES

CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class Steered(Protocol):
    """What a handler may use of the training's steering (`steering.Steering`)."""

    model: keras.Model
    knobs: dict[str, Any]  # settable params by name: keras.Variables
    actions: dict[str, Callable[[keras.Model, int], Any]]

    @property
    def checkpoint_dir(self) -> Path: ...

    @property
    def paused(self) -> bool: ...

    def stop(self, command: dict[str, Any], step: int) -> None: ...

    def pause(self, timeout: float | None) -> None: ...

    def resume(self) -> None: ...

    def lr_changed(self, step: int) -> None: ...

    def knob_takes_effect(self, name: str) -> bool: ...

    def controls(self) -> dict[str, Any]: ...

    def report_controls(self) -> None: ...


class Refused(Exception):
    """The command cannot be applied in this training; the message says why."""


@dataclass
class Context:
    steering: Steered
    step: int
    command: dict[str, Any]

    @property
    def model(self) -> keras.Model:
        return self.steering.model


def stop_training(ctx: Context, args: dict[str, Any]) -> None:
    """Acknowledged by the steering once the batch under way has ended, naming the last
    step that ran (with `steps_per_execution`, several run after this edge)."""
    ctx.steering.stop(ctx.command, ctx.step)


def set_lr(ctx: Context, args: dict[str, Any]) -> str:
    targets = _rate_targets(ctx, args.get("optimizer"))
    if "factor" not in args:
        value = _finite(args["value"], "learning rate")
        return _set_rates(ctx, {named: value for named in targets})
    factor = _finite(args["factor"], "factor")
    new = {}
    for named in targets:
        old = current_lr(named.optimizer)
        if old is None:
            raise Refused(f"{_of(named, targets)}has no learning rate to multiply")
        new[named] = old * factor
        if new[named] > args.get("at_most", math.inf):
            raise Refused(
                f"{_of(named, targets)}{old:.6g} x {factor:g} = {new[named]:.6g} is above the server's limit "
                f"{args['at_most']:g}"
            )
    return _set_rates(ctx, new)


def set_param(ctx: Context, args: dict[str, Any]) -> str:
    name, value = args["name"], _finite(args["value"], args["name"])
    if name == "learning_rate":
        return _set_rates(ctx, dict.fromkeys(_rate_targets(ctx, args.get("optimizer")), value))
    if "optimizer" in args:
        raise Refused(f"'optimizer' goes with learning_rate, not with {name}")
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


HANDLERS: dict[str, Callable[[Context, dict[str, Any]], str | None]] = {
    "stop_training": stop_training,
    "set_lr": set_lr,
    "set_param": set_param,
    "pause": pause,
    "resume": resume,
    "checkpoint": checkpoint,
    "action": action,
}
if set(HANDLERS) != set(COMMAND_TYPES):  # not an assert: it must hold under `python -O` too
    raise ImportError(f"the handlers {sorted(HANDLERS)} are not the wire's commands {sorted(COMMAND_TYPES)}")


def _rate_targets(ctx: Context, which: int | str | None) -> list[Named]:
    """The optimizers a rate command sets: the one named (by name or index), else every
    optimizer of the model that the training step uses and whose rate is not a schedule.
    Refused when there is none."""
    found = model_optimizers(ctx.model)
    if not found:
        raise Refused("the model has no optimizer")
    if which is not None:
        chosen = [named for i, named in enumerate(found) if which in (i, named.name)]
        if not chosen:
            listed = ", ".join(f"{i}: {named.name}" for i, named in enumerate(found))
            raise Refused(f"no optimizer {which!r}; the model has {listed}")
        found = chosen
    else:
        unused = idle(found)
        found = [named for named in found if named.name not in unused]
    settable = [named for named in found if schedule_of(named.optimizer) is None]
    if not settable:
        raise Refused(
            "; ".join(
                f"{_of(named, found)}the learning rate is {_a(type(schedule_of(named.optimizer)).__name__)}, "
                "a schedule; it cannot be set"
                for named in found
            )
        )
    return settable


def _set_rates(ctx: Context, new: dict[Named, float]) -> str:
    """Set each optimizer's rate; the ack message says exactly what changed."""
    for value in new.values():
        if value <= 0:
            raise Refused(f"a learning rate must be > 0, got {value:g}")
    changes = []
    for named, value in new.items():
        old = current_lr(named.optimizer)
        named.optimizer.learning_rate = value
        changes.append(f"{'unknown' if old is None else f'{old:.6g}'} -> {value:.6g}")
    ctx.steering.lr_changed(ctx.step)
    everyone = model_optimizers(ctx.model)
    if len(everyone) == 1:
        return f"learning rate {changes[0]} at step {ctx.step}"
    done = ", ".join(f"{named.name} {change}" for named, change in zip(new, changes))
    unused = idle(everyone)
    kept = [
        named.name
        + (" (a schedule)" if schedule_of(named.optimizer) is not None else "")
        + (" (not used by the training step)" if named.name in unused else "")
        for named in everyone
        if named not in new
    ]
    left = f"; unchanged: {', '.join(kept)}" if kept else ""
    return f"learning rate of {done} at step {ctx.step}{left}"


def _of(named: Named, among: list[Named]) -> str:
    """'NAME: ' where a message must say which of several optimizers it means."""
    return f"{named.name}: " if len(among) > 1 else ""


def _a(name: str) -> str:
    """`name` with its article: a CosineDecay, an ExponentialDecay."""
    return f"{'an' if name.lower().startswith(tuple('aeiou')) else 'a'} {name}"


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
