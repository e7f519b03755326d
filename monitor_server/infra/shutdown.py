"""A stop that is quick and quiet.

Event streams and command long-polls never end by themselves. Left to uvicorn, a stop
waits `timeout_graceful_shutdown` seconds for them and then cancels them with an error
and a traceback. So while the app runs, SIGINT and SIGTERM first close the app's live
subscriptions (they answer at once), then go on to uvicorn as before. Signal handlers
belong to the main thread: an app served from another thread (tests) keeps uvicorn's way.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable

from .bus import EventBus

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def close_streams_on_stop(bus: EventBus) -> Callable[[], None]:
    """Put the bus's closing in front of the stop signals' handlers; undo with the result.
    Call it on the event loop's thread: the close is scheduled there, never run inside the
    handler, which may have interrupted code that holds the bus's lock."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = {}

    def handler(signum, frame) -> None:
        loop.call_soon_threadsafe(bus.close)
        then = previous[signum]
        if callable(then):
            then(signum, frame)
        else:  # the default (or ignore) it had before
            signal.signal(signum, then)
            signal.raise_signal(signum)

    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, then in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, then)

    return restore
