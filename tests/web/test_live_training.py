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

import pytest

from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # each test steers a real training, a process of its own

ROOT = Path(__file__).parents[2]
READY = "body[data-ready=true]"


@contextmanager
def training(url: str, run_id: str, *args: str) -> Iterator[subprocess.Popen]:
    """`tests.support.trainer` against `url`, unslowed; killed if the test leaves it running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.trainer", url, run_id, *args],
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


def row_of(page, command_id: int):
    return page.locator(f"#commands tr[data-id='{command_id}']")


def newest_command(api, run_id: str) -> dict:
    return api.get(f"/api/v1/runs/{run_id}/commands").json()[-1]


def commands_of(api, run_id: str) -> list[dict]:
    return api.get(f"/api/v1/runs/{run_id}/commands").json()


def issued_by_page(api, run_id: str, before: int) -> dict:
    """The command the page just sent: the first after the `before` that existed."""
    return wait_for(lambda: commands_of(api, run_id)[before:], 30, "the page's command")[0]


def click_and_see_applied(page, api, run_id: str, click) -> dict:
    """Do `click()`; the command it sent reads `applied` in its row, live; as the API has it."""
    before = len(commands_of(api, run_id))
    click()
    command = issued_by_page(api, run_id, before)
    row_of(page, command["id"]).locator(".badge", has_text="applied").wait_for(timeout=60_000)
    return next(c for c in commands_of(api, run_id) if c["id"] == command["id"])


def last_step(api, run_id: str) -> int:
    return next(
        s["last_step"]
        for s in api.get(f"/api/v1/runs/{run_id}/series").json()
        if s["name"] == "loss" and s["scope"] == "batch"
    )


def test_every_control_built_from_the_runs_controls_works_on_a_full_speed_fit(page, api, server, tmp_path):
    folder = tmp_path / "ckpt"
    with training(server.url, "steer", "--knob", "--action", "--checkpoint-dir", str(folder)) as proc:
        wait_for(lambda: has_points(api, "steer"), 120, "the training to log")
        page.goto("/runs/steer")
        page.wait_for_selector(READY)
        page.evaluate("() => { window.sameDocument = true; }")
        page.wait_for_selector("form[data-param=scale]")  # built from the run's controls
        assert page.locator("#actions button").all_inner_texts() == ["note"]

        page.fill("form[data-param=scale] input", "0.5")
        knob = click_and_see_applied(page, api, "steer", lambda: page.click("form[data-param=scale] button"))
        assert knob["message"].startswith("scale 1 -> 0.5 at step ")
        page.locator("form[data-param=scale] .current", has_text="now 0.5").wait_for()

        halved = click_and_see_applied(page, api, "steer", lambda: page.click("#lr-half"))
        assert halved["message"].startswith("learning rate 0.01 -> 0.005 at step ")

        noted = click_and_see_applied(page, api, "steer", lambda: page.click("#actions button[data-action=note]"))
        assert noted["message"].startswith("noted ")

        page.fill("#checkpoint-name", "from-page")
        saved = click_and_see_applied(page, api, "steer", lambda: page.click("#checkpoint-form button"))
        assert saved["message"].startswith(f"saved {folder.resolve() / 'from-page.keras'}")
        assert (folder / "from-page.keras").exists()

        # Scheduled a few thousand steps ahead: held, listed, then applied exactly there.
        target = last_step(api, "steer") + 3000
        page.select_option("#when", "step")
        page.fill("#when-value", str(target))
        page.fill("#lr-value", "0.02")
        before = len(commands_of(api, "steer"))
        page.click("#lr-set")
        scheduled = issued_by_page(api, "steer", before)
        assert row_of(page, scheduled["id"]).locator("td").nth(1).inner_text() == f"set_lr 0.02 at step {target}"
        row_of(page, scheduled["id"]).locator(".badge", has_text="applied").wait_for(timeout=60_000)
        assert next(c for c in commands_of(api, "steer") if c["id"] == scheduled["id"])["step"] == target
        assert page.locator("#when").input_value() == "now"  # a schedule is for one command

        page.click("#pause")
        page.wait_for_selector("#run-status .badge.status-paused", timeout=60_000)
        assert page.locator("#pause").inner_text() == "Resume"
        paused_at = last_step(api, "steer")
        page.click("#pause")  # now Resume
        page.wait_for_selector("#run-status .badge.status-running", timeout=60_000)
        pause, resume = api.get("/api/v1/runs/steer/commands").json()[-2:]
        assert (pause["type"], pause["status"], resume["type"], resume["status"]) == (
            "pause",
            "applied",
            "resume",
            "applied",
        )
        assert pause["step"] == resume["step"] and pause["step"] >= paused_at

        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#stop")
        page.wait_for_selector("#run-status .badge.status-stopped", timeout=60_000)
        _, errors = proc.communicate(timeout=60)
        assert proc.returncode == 0, errors

    assert page.evaluate("() => window.sameDocument") is True
    # Labels of commands close together share one mark; its hover lists them all.
    markers = page.evaluate(
        "() => document.querySelector('.plot').layout.annotations.flatMap(a => a.hovertext.split('<br>'))"
    )
    assert set(markers) >= {
        "scale = 0.5",
        "lr \u00d70.5",
        "note",
        "ckpt from-page",
        "lr 0.02",
        "pause",
        "resume",
        "stop",
    }


def test_the_run_list_and_compare_steer_several_runs_at_once(page, api, server):
    with training(server.url, "a", "--project", "fleet") as a, training(server.url, "b", "--project", "fleet") as b:
        wait_for(lambda: has_points(api, "a") and has_points(api, "b"), 120, "both trainings to log")
        page.goto("/compare?runs=a,b")
        page.wait_for_selector(READY)
        page.fill("#fleet-lr", "0.03")
        page.click("#fleet-lr-set")
        page.locator("#fleet-result", has_text="sent to 2 run(s)").wait_for()
        for run_id in ("a", "b"):
            wait_for(lambda r=run_id: newest_command(api, r)["status"] == "applied", 60, "the rate to be set")

        page.goto("/")
        page.wait_for_selector(READY)
        page.check("tr[data-id=a] input")
        page.check("tr[data-id=b] input")
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#fleet-stop")
        page.locator("#fleet-result", has_text="sent to 2 run(s)").wait_for()
        page.wait_for_selector("tr[data-id=a][data-status=stopped]", timeout=60_000)
        page.wait_for_selector("tr[data-id=b][data-status=stopped]", timeout=60_000)
        for proc in (a, b):
            proc.communicate(timeout=60)
            assert proc.returncode == 0
    lr = api.get("/api/v1/runs/a/series/batch/lr").json()
    assert lr["values"][-1] == 0.03


def test_a_gan_gets_a_rate_per_optimizer_from_the_page(page, api, server, tmp_path):
    """A model whose train_step uses its own optimizers (keras.io's GAN): the page offers
    each, shows each one's rate, and a rate set for one changes that one only."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.programs", server.url, str(tmp_path / "seen.json"), "gan_until_stopped"],
        cwd=ROOT,
        env={**os.environ, "KERAS_BACKEND": "tensorflow", "FITWATCH_SPOOL_DIR": str(tmp_path / "spool")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: has_points(api, "gan-live"), 120, "the training to log")
        page.goto("/runs/gan-live")
        page.wait_for_selector(READY)
        choices = page.locator("#lr-optimizer option")
        choices.nth(3).wait_for(state="attached", timeout=60_000)
        assert choices.all_text_contents() == ["every optimizer", "optimizer", "d_optimizer", "g_optimizer"]
        # After its first epoch the training says which optimizers its step uses.
        page.wait_for_function(
            """() => document.getElementById('lr-current').textContent ===
                'current rates: optimizer 0.001 (unused), d_optimizer 3.000e-4, g_optimizer 3.000e-4'""",
            timeout=60_000,
        )

        def set_g_rate():
            page.select_option("#lr-optimizer", "g_optimizer")
            page.fill("#lr-value", "0.0005")
            page.click("#lr-set")

        command = click_and_see_applied(page, api, "gan-live", set_g_rate)
        assert command["args"] == {"value": 0.0005, "optimizer": "g_optimizer"}
        assert command["message"].startswith("learning rate of g_optimizer 0.0003 -> 0.0005 at step ")
        page.wait_for_function(
            """() => document.getElementById('lr-current').textContent ===
                'current rates: optimizer 0.001 (unused), d_optimizer 3.000e-4, g_optimizer 5.000e-4'""",
            timeout=60_000,
        )
        legend = page.locator("#lr-charts .legendtext")
        legend.nth(2).wait_for(timeout=60_000)
        assert {"optimizer (batch)", "d_optimizer (batch)", "g_optimizer (batch)"} <= set(legend.all_text_contents())

        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#stop")
        page.wait_for_selector("#run-status .badge.status-stopped", timeout=60_000)
        _, errors = proc.communicate(timeout=60)
        assert proc.returncode == 0, errors
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
