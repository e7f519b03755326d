"""Ends a run as `failed` or `interrupted` when `fit` never reaches `on_train_end`.

Keras skips `on_train_end` when `fit` raises. A watchdog thread notices `fit` leaving the
training thread's stack; `sys.excepthook` names an uncaught exception; `atexit` covers a
process that exits inside `fit`. Whichever comes first ends the run, once.
"""

from __future__ import annotations

import atexit
import sys
import threading
from collections.abc import Callable

from .client import MonitorClient
from .notices import describe_error


class RunGuard:
    """Ends the run as `failed` or `interrupted` when `fit` exits without `on_train_end`:
    an exception out of `fit` (seen by a watchdog thread that finds `fit` gone from the
    training thread's stack) or the process exiting (atexit and `sys.excepthook`)."""

    def __init__(
        self, client: MonitorClient, model, flush_timeout: float, before_end: Callable[[], None] = lambda: None
    ) -> None:
        self.client = client
        self.flush_timeout = flush_timeout
        self.before_end = before_end  # sends what the training did before the run ends
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._ended = threading.Event()  # an abort has ended the run and closed the client
        self._lock = threading.Lock()
        self._thread_id = threading.get_ident()
        self._fit_frame = _fit_frame(model)
        self._last_value = getattr(sys, "last_value", None)
        self._previous_hook = sys.excepthook
        sys.excepthook = self._excepthook
        atexit.register(self._at_exit)
        if self._fit_frame is not None:
            threading.Thread(target=self._watch, name="fitwatch-watchdog", daemon=True).start()

    def settle(self) -> bool:
        """`fit` ended normally: stand down; False if the run was ended already."""
        with self._lock:
            if self._done.is_set():
                return False
            self._stand_down()
            atexit.unregister(self._at_exit)
            return True

    def _stand_down(self) -> None:
        self._done.set()
        self._fit_frame = None
        if sys.excepthook is self._excepthook:
            sys.excepthook = self._previous_hook

    def _excepthook(self, exc_type, exc, tb) -> None:
        self.error = exc
        self._previous_hook(exc_type, exc, tb)

    def _at_exit(self) -> None:
        self._abort("the process exited before fit ended")
        # The watchdog may be delivering the run's end: a daemon thread dies with the
        # interpreter, so the exit waits for it as long as a close would.
        self._ended.wait(self.flush_timeout + 1.0)

    def _watch(self) -> None:
        while not self._done.wait(0.5):
            if not self._fit_running():
                # Give an uncaught exception a moment to reach sys.excepthook, which names it.
                self._done.wait(0.2)
                self._abort("fit raised an exception")
                return

    def _fit_running(self) -> bool:
        frame = sys._current_frames().get(self._thread_id)
        while frame is not None:
            if frame is self._fit_frame:
                return True
            frame = frame.f_back
        return False

    def _abort(self, fallback: str) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self._stand_down()
        error = self.error
        if error is None and getattr(sys, "last_value", None) is not self._last_value:
            error = sys.last_value  # an interactive session kept the exception
        interrupt = _interrupt(error)
        if interrupt is not None or (error is None and fallback.startswith("the process")):
            status, error = "interrupted", interrupt
        else:
            status = "failed"
        reason = describe_error(error) if error is not None else fallback
        try:
            try:
                self.before_end()
            except Exception:  # the run's end matters more
                pass
            self.client.end(status, reason)
            self.client.close(self.flush_timeout)
        finally:
            self._ended.set()


def _interrupt(error: BaseException | None) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt behind `error`, if any: Ctrl-C landing in a C extension can
    surface as another exception (a SystemError, a framework error) caused by it."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _fit_frame(model):
    """The frame of `model.fit` on this thread's stack, if there is one."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "fit" and frame.f_locals.get("self") is model:
            return frame
        frame = frame.f_back
    return None
