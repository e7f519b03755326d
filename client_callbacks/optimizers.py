"""Keras helpers of the callback: the optimizers a model owns and their learning rates, and
config values made JSON.

A model's training step may use other optimizers than `model.optimizer` (a GAN's
`d_optimizer` and `g_optimizer`), so the rates are read and set on every optimizer the
model holds as an attribute, each by the attribute's name.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import keras


class Named(NamedTuple):
    name: str  # the model's attribute ("optimizer", "d_optimizer"), "[i]" for a wrapper's i-th
    optimizer: Any  # a keras.optimizers.Optimizer that holds a rate (wrappers unwrapped)


def leaf_optimizers(optimizer) -> list:
    """The optimizers that hold a learning rate: the inner ones of a wrapper."""
    inner = getattr(optimizer, "inner_optimizer", None)
    if inner is not None:
        return leaf_optimizers(inner)
    several = getattr(optimizer, "optimizers", None)
    if several:
        return [leaf for opt in several for leaf in leaf_optimizers(opt)]
    return [optimizer]


def model_optimizers(model) -> list[Named]:
    """Every optimizer the model holds: `model.optimizer` first, then the other attributes
    that are optimizers, in the order they were set; each optimizer once."""
    found: list[Named] = []
    seen: set[int] = set()
    attributes = dict(vars(model))
    attributes.pop("optimizer", None)
    for attr, value in [("optimizer", getattr(model, "optimizer", None)), *attributes.items()]:
        if attr.startswith("_") or not isinstance(value, keras.optimizers.Optimizer):
            continue
        leaves = leaf_optimizers(value)
        for i, leaf in enumerate(leaves):
            if id(leaf) not in seen:
                seen.add(id(leaf))
                found.append(Named(f"{attr}[{i}]" if len(leaves) > 1 else attr, leaf))
    return found


def steps_taken(optimizer) -> int | None:
    """The optimizer's `iterations`: how many updates it applied, if it can tell."""
    try:
        return int(keras.ops.convert_to_numpy(optimizer.iterations))
    except Exception:  # no step count
        return None


def idle(optimizers: list[Named]) -> set[str]:
    """The names of the optimizers that never applied an update while another one did: the
    `model.optimizer` that `compile()` made by default for a step that uses its own."""
    steps = {named.name: steps_taken(named.optimizer) for named in optimizers}
    if not any(steps.values()):
        return set()
    return {name for name, taken in steps.items() if taken == 0}


def schedule_of(optimizer) -> Any:
    """The optimizer's rate when it is a schedule (or another callable), else None."""
    current = getattr(optimizer, "_learning_rate", None)
    if isinstance(current, keras.optimizers.schedules.LearningRateSchedule) or (
        callable(current) and not isinstance(current, keras.Variable)
    ):
        return current
    return None


def current_lr(optimizer) -> float | None:
    if optimizer is None:
        return None
    try:
        value = keras.ops.convert_to_numpy(leaf_optimizers(optimizer)[0].learning_rate)
    except Exception:  # an optimizer without a readable rate: no lr series
        return None
    # Through str(): a float32 rate of 0.001 reads 0.001, not 0.0010000000474974513.
    return float(str(value))


def lr_series(optimizers: list[Named]) -> dict[str, float]:
    """The rates as series values: `lr` for a model with one optimizer, `lr.NAME` for each
    of several."""
    several = len(optimizers) > 1
    rates = {f"lr.{named.name}" if several else "lr": current_lr(named.optimizer) for named in optimizers}
    return {name: rate for name, rate in rates.items() if rate is not None}


def jsonable(value: Any) -> Any:
    """Config values as JSON: numbers, text, lists and objects; anything else as text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return jsonable(value.item())
    if hasattr(value, "get_config"):
        return {"class": type(value).__name__, **jsonable(value.get_config())}
    return str(value)
