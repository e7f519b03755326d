"""A page whose stream drops (the server restarts, the network breaks) says so, and comes
back with every point it missed: no hole in a curve, no point twice. Each test runs with
the stream shared between tabs (a shared worker) and with a page's own stream (a browser
without SharedWorker). What is logged while the page is away goes through another server
process on the same database, so the one the page reconnects to never numbered it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from playwright.sync_api import expect

from tests.support.api import create_run, make_records, post_logs
from tests.support.pages import watch
from tests.support.servers import ServerProcess
from tests.web.test_pages import READY

NO_SHARED_WORKER = "delete window.SharedWorker"


@pytest.fixture
def restartable(tmp_path) -> Iterator[ServerProcess]:
    """A server in its own process, on a file database: it can be stopped and started again."""
    server = ServerProcess(f"sqlite:///{tmp_path / 'fitwatch.db'}").start()
    yield server
    server.stop()


@contextmanager
def away(restartable: ServerProcess) -> Iterator[httpx.Client]:
    """The page's server is down: the page says it is reconnecting. Meanwhile the yielded
    client writes through another process on the same database; the page's server starts
    again after."""
    restartable.stop()
    other = ServerProcess(restartable.db_url).start()
    try:
        with httpx.Client(base_url=other.url, timeout=30) as api:
            yield api
    finally:
        other.stop()
    restartable.start()


@pytest.fixture(params=["shared", "own"])
def page_of(request, browser, restartable) -> Iterator[object]:
    context = browser.new_context(base_url=restartable.url, viewport={"width": 1366, "height": 900})
    if request.param == "own":
        context.add_init_script(NO_SHARED_WORKER)
    page = context.new_page()
    errors: list[str] = []
    watch(page, errors, console=False)  # the browser logs each refused reconnect
    yield page
    context.close()
    assert not errors, errors


def drawn_steps(page) -> list[int] | None:
    """The steps of the batch loss curve as the chart draws them."""
    return page.evaluate(
        """() => {
            const chart = [...document.querySelectorAll('.chart')].find(c => c.querySelector('h3').textContent === 'loss (batch)');
            return chart ? chart.querySelector('.plot').data?.find(t => t.name === 'loss')?.x ?? null : null;
        }"""
    )


def wait_drawn(page, n: int) -> None:
    page.wait_for_function(
        """n => {
            const chart = [...document.querySelectorAll('.chart')].find(c => c.querySelector('h3').textContent === 'loss (batch)');
            return chart?.querySelector('.plot').data?.find(t => t.name === 'loss')?.x.length >= n;
        }""",
        arg=n,
    )


def test_run_page_resumes_after_a_server_restart_with_every_point(page_of, restartable):
    page = page_of
    with httpx.Client(base_url=restartable.url, timeout=30) as api:
        create_run(api, "r")
        post_logs(api, "r", make_records(50))
        page.goto("/runs/r")
        page.wait_for_selector(READY)
        wait_drawn(page, 50)
        expect(page.locator("#live")).to_have_text("live")

    with away(restartable) as api:
        expect(page.locator("#live")).to_have_text("reconnecting…")
        for start in range(50, 150, 25):
            assert post_logs(api, "r", make_records(25, start=start)).status_code == 200
    with httpx.Client(base_url=restartable.url, timeout=30) as api:
        wait_drawn(page, 150)
        expect(page.locator("#live")).to_have_text("live")
        post_logs(api, "r", make_records(10, start=150))  # and live again after it
        wait_drawn(page, 160)
        stored = api.get("/api/v1/runs/r/series/batch/loss", params={"max_points": 1000}).json()
    assert drawn_steps(page) == stored["steps"] == list(range(160))


def test_run_list_rereads_after_a_server_restart(page_of, restartable):
    page = page_of
    with httpx.Client(base_url=restartable.url, timeout=30) as api:
        create_run(api, "before", name="before")
        page.goto("/")
        page.wait_for_selector(READY)
        expect(page.locator("tr[data-id=before]")).to_be_visible()
    with away(restartable) as api:
        expect(page.locator("#live")).to_have_text("reconnecting…")
        create_run(api, "meanwhile", name="meanwhile")
        api.patch("/api/v1/runs/before", json={"status": "finished"})
    expect(page.locator("tr[data-id=meanwhile]")).to_be_visible()
    expect(page.locator("tr[data-id=before] .badge")).to_have_text("finished")
    expect(page.locator("#live")).to_have_text("live")


def test_compare_page_resumes_after_a_server_restart_with_every_point(page_of, restartable):
    page = page_of
    with httpx.Client(base_url=restartable.url, timeout=30) as api:
        for run_id in ("a", "b"):
            create_run(api, run_id, name=f"run {run_id}")
            post_logs(api, run_id, make_records(20))
        page.goto("/compare?runs=a,b")
        page.wait_for_selector(READY)
        page.select_option("#metric", "batch/loss")
        page.wait_for_function("() => document.querySelector('.plot')?.data?.[1]?.x.length === 20")
    with away(restartable) as api:
        expect(page.locator("#live")).to_have_text("reconnecting…")
        for run_id, n in (("a", 30), ("b", 50)):
            assert post_logs(api, run_id, make_records(n, start=20)).status_code == 200
        api.patch("/api/v1/runs/a", json={"status": "finished"})
    with httpx.Client(base_url=restartable.url, timeout=30) as api:
        page.wait_for_function(
            "() => { const d = document.querySelector('.plot')?.data; return d?.[0]?.x.length === 50 && d?.[1]?.x.length === 70; }"
        )
        expect(page.locator("#legend li[data-id=a] .badge")).to_have_text("finished")
        drawn = page.evaluate("() => Object.fromEntries(document.querySelector('.plot').data.map(t => [t.name, t.x]))")
        for run_id in ("a", "b"):
            stored = api.get(f"/api/v1/runs/{run_id}/series/batch/loss").json()["steps"]
            assert drawn[f"run {run_id}"] == stored
    assert drawn == {"run a": list(range(50)), "run b": list(range(70))}
