"""Keras helpers of the callback: the learning rate of (possibly wrapped) optimizers, and
config values made JSON."""

from __future__ import annotations

from typing import Any

import keras


def leaf_optimizers(optimizer) -> list:
    """The optimizers that hold a learning rate: the inner ones of a wrapper."""
    inner = getattr(optimizer, "inner_optimizer", None)
    if inner is not None:
        return leaf_optimizers(inner)
    several = getattr(optimizer, "optimizers", None)
    if several:
        return [leaf for opt in several for leaf in leaf_optimizers(opt)]
    return [optimizer]


def _schedule(optimizer):
    """The first schedule (or callable) among the optimizers' rates, else None."""
    for opt in leaf_optimizers(optimizer):
        current = getattr(opt, "_learning_rate", None)
        if isinstance(current, keras.optimizers.schedules.LearningRateSchedule) or (
            callable(current) and not isinstance(current, keras.Variable)
        ):
            return current
    return None


def lr_is_settable(optimizer) -> bool:
    return _schedule(optimizer) is None


def set_learning_rate(optimizer, value: float) -> float:
    """Assign `value` to every optimizer involved; the previous rate. Refuses schedules."""
    schedule = _schedule(optimizer)
    if schedule is not None:
        raise TypeError(f"the learning rate is a {type(schedule).__name__}, a schedule; it cannot be set")
    old = current_lr(optimizer)
    for opt in leaf_optimizers(optimizer):
        opt.learning_rate = value
    return float("nan") if old is None else old


def current_lr(optimizer) -> float | None:
    if optimizer is None:
        return None
    try:
        value = keras.ops.convert_to_numpy(leaf_optimizers(optimizer)[0].learning_rate)
    except Exception:  # an optimizer without a readable rate: no lr series
        return None
    # Through str(): a float32 rate of 0.001 reads 0.001, not 0.0010000000474974513.
    return float(str(value))


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
