"""How fitwatch tells the user that something went wrong: one `FitwatchWarning` each.

Nothing the network or the disk does raises into the training. The client's threads note
what they ran into (`Notices.add`, once per kind), and the next call of the user's on a
thread of theirs shows it (`Notices.show`), as a warning pointing at the user's own line
(`warn`): a warning raised on one of our threads would point nowhere useful.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
import warnings
from collections import deque


class FitwatchWarning(UserWarning):
    """Something kept fitwatch from delivering; training is not affected."""


class Notices:
    """Problems the threads ran into, each kind once, waiting to be shown. Safe from
    several threads at once (Keras' async batch-end hooks may show them together)."""

    def __init__(self) -> None:
        self._waiting: deque[str] = deque()
        self._kinds: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def add(self, kind: str, message: str) -> None:
        if kind not in self._kinds:
            self._kinds.add(kind)
            self._waiting.append(message)

    def show(self) -> None:
        """Show the waiting ones as warnings on the calling thread."""
        while True:
            try:
                message = self._waiting.popleft()
            except IndexError:
                return
            warn(message)


def warn(message: str) -> None:
    """A FitwatchWarning shown at the user's line that led here (see `user_stacklevel`)."""
    level = user_stacklevel()
    try:
        warnings.warn(message, FitwatchWarning, stacklevel=1 if level is None else level)
    except Exception:  # warnings turned into errors must not break the training
        pass


def user_stacklevel() -> int | None:
    """The `stacklevel` for a `warnings.warn` in the caller that shows the first line of
    the stack outside fitwatch, Keras and the threads that run Keras' hooks: the user's
    `fit` or `log()` call. None when this thread runs no code of the user's (a Keras worker
    thread, an exit handler)."""
    library = _library()
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(library):
        frame, level = frame.f_back, level + 1
    return None if frame is None else level


def _library() -> tuple[str, ...]:
    """Where the code between a user's call and our warnings lives: ours, Keras', and the
    thread pool that runs Keras' async hooks."""
    places = [os.path.dirname(__file__) + os.sep, threading.__file__]
    places.append(os.path.dirname(concurrent.futures.__file__) + os.sep)
    keras = sys.modules.get("keras")
    if getattr(keras, "__file__", None):
        places.append(os.path.dirname(keras.__file__) + os.sep)
    return tuple(places)


def describe_error(error: BaseException) -> str:
    """`Type: message`, or the type alone when the message is empty: how a run's end
    reason or a failed ack names an exception."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
