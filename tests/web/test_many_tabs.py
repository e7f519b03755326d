"""Many runs at once: a browser holds six connections to a server, so every fitwatch tab
of a browser shares one event stream (a shared worker), and a page follows all it shows
on one stream. Twelve run pages in twelve tabs, and a compare of twelve runs, stay live."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.api import create_run, make_records, post_logs
from tests.support.pages import watch
from tests.support.waiting import wait_for
from tests.web.test_pages import READY
from tests.web.test_reconnect import wait_drawn

RUNS = [f"r{i:02d}" for i in range(12)]
NO_SHARED_WORKER = "delete window.SharedWorker"


@pytest.fixture
def context(browser, server) -> Iterator[object]:
    """A browser context (one profile: one pool of six connections to the server) whose
    pages fail the test on a console error or a failed script."""
    context = browser.new_context(base_url=server.url, viewport={"width": 1000, "height": 700})
    context.errors = []
    context.on("page", lambda page: watch(page, context.errors))
    yield context
    context.close()
    assert not context.errors, context.errors


def streams(server) -> int:
    """The event streams the server holds open."""
    bus = server.app.state.bus
    return len({sub for topic in list(bus._topics.values()) for sub in list(topic.subs)})


def wait_streams(server, condition, what: str) -> None:
    """Wait for `condition` of the server's streams; failing, say which it holds, each
    with the topics it follows."""
    try:
        wait_for(condition, 120, what)
    except AssertionError as exc:
        held: dict[object, list[str]] = {}
        for name, topic in list(server.app.state.bus._topics.items()):
            for sub in list(topic.subs):
                held.setdefault(sub, []).append(name)
        raise AssertionError(f"{exc}; the server holds {[sorted(t) for t in held.values()]}") from None


@pytest.mark.slow
def test_twelve_run_pages_in_twelve_tabs_each_draw_a_live_point(context, api, server):
    for run_id in RUNS:
        create_run(api, run_id, name=f"run {run_id}")
        post_logs(api, run_id, make_records(5))
    pages = []
    for run_id in RUNS:
        page = context.new_page()
        page.goto(f"/runs/{run_id}")
        page.wait_for_selector(READY)
        wait_drawn(page, 5)
        pages.append(page)
    for page in pages:
        page.wait_for_function("() => document.getElementById('live').dataset.state === 'live'")
    for run_id in RUNS:
        post_logs(api, run_id, make_records(1, start=5))
    for page in pages:
        wait_drawn(page, 6)
    # One stream for all twelve tabs, once the switches to each larger set are done.
    wait_streams(server, lambda: streams(server) == 1, "one stream")
    # A tab that closes is let go of; the others stay live.
    pages.pop(0).close()
    post_logs(api, RUNS[1], make_records(1, start=6))
    wait_drawn(pages[0], 7)
    wait_streams(server, lambda: not bus_follows(server, RUNS[0]), "the closed tab's run to be let go")


def bus_follows(server, run_id: str) -> bool:
    topic = server.app.state.bus._topics.get(f"run:{run_id}")
    return topic is not None and bool(topic.subs)


def compare_twelve(context, api, server) -> object:
    for i, run_id in enumerate(RUNS):
        create_run(api, run_id, name=f"run {run_id}")
        post_logs(api, run_id, make_records(10 + i))
    page = context.new_page()
    page.goto(f"/compare?runs={','.join(RUNS)}")
    page.wait_for_selector(READY)
    page.select_option("#metric", "batch/loss")
    page.wait_for_function(
        "n => document.querySelector('.plot')?.data?.filter(t => t.x.length).length === n", arg=len(RUNS)
    )
    page.wait_for_function("() => document.getElementById('live').dataset.state === 'live'")
    for i, run_id in enumerate(RUNS):
        post_logs(api, run_id, make_records(1, start=10 + i))
    page.wait_for_function(
        """() => {
            const traces = document.querySelector('.plot').data.filter(t => t.x.length);
            return traces.length === 12 && traces.every((t, i) => t.x.length === 11 + i);
        }"""
    )
    traces = page.evaluate("() => document.querySelector('.plot').data.filter(t => t.x.length).map(t => t.x)")
    assert traces == [list(range(11 + i)) for i in range(12)]
    wait_streams(server, lambda: streams(server) == 1, "one stream")
    return page


def test_a_compare_of_twelve_runs_draws_them_and_their_live_points(context, api, server):
    compare_twelve(context, api, server)


def test_without_a_shared_worker_a_page_holds_one_stream_for_all_it_shows(context, api, server):
    context.add_init_script(NO_SHARED_WORKER)  # as in Chrome on Android
    page = compare_twelve(context, api, server)
    assert page.evaluate("() => typeof SharedWorker") == "undefined"
