"""The command poller thread: long-polls the server for commands the training has not
acknowledged, so a click on Stop reaches the training within a request's round trip.
It starts polling once the sender has created the run (before, every poll would be a 404).

Each poll also tells the server the run is alive. The server answers every unacknowledged
command on each poll; the ones already handed over are skipped by the client, and when a
poll brings nothing new the thread pauses `interval` seconds so that a command waiting
for its acknowledgement does not turn the long-poll into a busy loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx

from .transport import Rejected, Retry, request
from .wire import JITTER, backoff

# Seconds a poll waits on the server for a command (its limit is 30), less a random part
# of up to a quarter: trainings started together, as a sweep starts them, would otherwise
# poll in step, all their polls reaching the server at once every WAIT seconds.
WAIT = 10.0
# After failed polls the thread waits twice the interval, doubling up to BACKOFF_CAP, each
# wait a random 50-100 % of that (`wire.backoff`, as the sender's retries).
BACKOFF_CAP = 30.0


class Poller(threading.Thread):
    def __init__(
        self,
        connect: Callable[[], httpx.Client],
        run_id: str,
        on_commands: Callable[[list[dict[str, Any]]], int],
        interval: float,
        ready: threading.Event,
    ) -> None:
        super().__init__(name=f"fitwatch-poller-{run_id}", daemon=True)
        self.connect = connect
        self.run_id = run_id
        self.on_commands = on_commands
        self.interval = interval
        self.ready = ready
        self.stopped = threading.Event()

    def stop(self) -> None:
        """End the thread once its current poll returns (daemon: it never holds up exit)."""
        self.stopped.set()

    def run(self) -> None:
        failures = 0
        while not self.ready.wait(0.5):
            if self.stopped.is_set():
                return
        http = self.connect()
        try:
            while not self.stopped.is_set():
                wait = WAIT * JITTER.uniform(0.75, 1.0)
                try:
                    response = request(
                        http,
                        "GET",
                        f"/api/v1/runs/{self.run_id}/commands",
                        params={"status": "pending", "wait": round(wait, 3)},
                        timeout=http.timeout.read + wait,
                    )
                except Rejected:  # the run was deleted
                    self.stopped.wait(self.interval)
                    continue
                except Retry:
                    failures += 1
                    self.stopped.wait(backoff(failures, 2 * self.interval, BACKOFF_CAP))
                    continue
                failures = 0
                commands = response.json()
                if commands and not self.on_commands(commands):
                    self.stopped.wait(self.interval)
        finally:
            http.close()
