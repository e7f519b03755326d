"""The run page while a real training runs at full speed in its own process: the training
applies a command within milliseconds, often before the page has read the answer to its
own POST, and what the page shows must still be what happened."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import wait_for

ROOT = Path(__file__).parents[2]
READY = "body[data-ready=true]"


@contextmanager
def training(url: str, run_id: str, *args: str) -> Iterator[subprocess.Popen]:
    """`tests.trainer` against `url`, unslowed; killed if the test leaves it running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.trainer", url, run_id, *args],
        cwd=ROOT,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)


def has_points(api, run_id: str) -> bool:
    response = api.get(f"/api/v1/runs/{run_id}/series")
    return response.status_code == 200 and any(s["count"] > 0 for s in response.json())


def badges(page) -> list[str]:
    return page.evaluate("() => [...document.querySelectorAll('#commands tr .badge')].map(b => b.textContent)")


def test_commands_clicked_during_a_full_speed_fit_each_read_applied_without_a_reload(page, api, server):
    """Five rates and a stop, clicked in a row. One POST answer is held back until the
    training has applied that command, so that the page surely reads the events first."""
    held = []

    def hold_one_answer(route):
        response = route.fetch()
        if route.request.method == "POST" and len(held) == 2:
            command = response.json()
            wait_for(lambda: status_of(api, "fast", command["id"]) == "applied", 60, "the held command to be applied")
        held.append(route.request.method)
        route.fulfill(response=response)

    page.route("**/api/v1/runs/fast/commands", hold_one_answer)
    with training(server.url, "fast") as proc:
        wait_for(lambda: has_points(api, "fast"), 120, "the training to log")
        page.goto("/runs/fast")
        page.wait_for_selector(READY)
        page.evaluate("() => { window.sameDocument = true; }")

        rates = ("0.05", "0.02", "0.04", "0.01", "0.03")
        for n, value in enumerate(rates, start=1):
            page.fill("#lr-value", value)
            page.click("#lr-set")
            page.wait_for_function(f"() => document.querySelectorAll('#commands tr').length === {n}")
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#stop")

        page.wait_for_function(
            """() => {
                const shown = [...document.querySelectorAll('#commands tr .badge')].map(b => b.textContent);
                return shown.length === 6 && shown.every(s => s === 'applied');
            }""",
            timeout=60_000,
        )
        page.wait_for_selector("#run-status .badge.status-stopped", timeout=60_000)
        _, errors = proc.communicate(timeout=60)
        assert proc.returncode == 0, errors

    assert page.evaluate("() => window.sameDocument") is True  # no reload did it
    stored = api.get("/api/v1/runs/fast/commands").json()
    assert [(c["type"], c["status"]) for c in stored] == [("set_lr", "applied")] * 5 + [("stop_training", "applied")]
    steps = page.evaluate("() => [...document.querySelectorAll('#commands tr')].map(tr => tr.children[3].textContent)")
    assert steps == [str(c["step"]) for c in reversed(stored)]  # newest first, with the step it took effect at


def status_of(api, run_id: str, command_id: int) -> str:
    return next(c["status"] for c in api.get(f"/api/v1/runs/{run_id}/commands").json() if c["id"] == command_id)
