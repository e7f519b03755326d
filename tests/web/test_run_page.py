"""The run page as a person reads it, mostly while a real training logs in its own process:
errors that go away, axes that count in whole steps and epochs, the learning rate as a
step line, markers that stay readable, values Plotly cannot draw, the controls a run can
take, and the page an unknown address gets."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import combinations

import pytest
from playwright.sync_api import expect

from tests.support.api import assert_error, create_run, post_logs
from tests.support.pages import watch
from tests.support.waiting import wait_for
from tests.web.test_live_training import READY, ROOT, has_points, last_step, training
from tests.web.test_phone import PHONE, assert_no_page_overflow

# The chart titled `title`, in the page's scripts.
CHART = "title => [...document.querySelectorAll('.chart')].find(c => c.querySelector('h3').textContent === title)"


def open_run(page, run_id: str) -> None:
    page.goto(f"/runs/{run_id}")
    page.wait_for_selector(READY)


def x_ticks(page, title: str) -> list[str]:
    """The x axis's tick labels as drawn."""
    return page.evaluate(
        f"title => [...({CHART})(title).querySelectorAll('.xtick text')].map(t => t.textContent)", title
    )


def full_axis(page, title: str, axis: str = "xaxis") -> dict:
    """The chart's axis as Plotly drew it: type, title, range."""
    return page.evaluate(
        f"""([title, axis]) => {{
            const a = ({CHART})(title).querySelector('.plot')._fullLayout[axis];
            return {{type: a.type, title: a.title.text, range: a.range}};
        }}""",
        [title, axis],
    )


def traces(page, title: str) -> list[dict]:
    return page.evaluate(
        f"title => ({CHART})(title).querySelector('.plot').data.map(t => ({{name: t.name, x: t.x, y: t.y, text: t.text || null}}))",
        title,
    )


def logged(api, run_id: str, steps: int = 0) -> bool:
    """The run's batch loss has reached step `steps`."""
    series = api.get(f"/api/v1/runs/{run_id}/series")
    return series.status_code == 200 and any(
        s["scope"] == "batch" and s["name"] == "loss" and s["last_step"] >= steps for s in series.json()
    )


def finish(proc: subprocess.Popen) -> None:
    """Wait for the training to end by itself, successfully."""
    _, errors = proc.communicate(timeout=300)
    assert proc.returncode == 0, errors


def stop(page, proc: subprocess.Popen) -> None:
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#stop")
    page.wait_for_selector("#run-status .badge.status-stopped", timeout=60_000)
    finish(proc)


@pytest.mark.slow
def test_an_error_goes_with_the_next_command_that_succeeds_and_can_be_closed(page, api, server):
    with training(server.url, "err") as proc:
        wait_for(lambda: has_points(api, "err"), 120, "the training to log")
        open_run(page, "err")
        error = page.locator("#error")
        page.fill("#lr-value", "100")
        page.click("#lr-set")
        expect(error).to_contain_text(re.compile(r"a learning rate of 100(\.0)? is above this server's limit 10"))
        page.errors.clear()  # the browser logs the refused POST

        page.fill("#lr-value", "0.02")
        page.click("#lr-set")
        page.locator("#commands tr", has_text="set_lr 0.02").locator(".badge", has_text="applied").wait_for(
            timeout=60_000
        )
        expect(error).to_be_hidden()

        page.fill("#lr-value", "100")
        page.click("#lr-set")
        expect(error).to_be_visible()
        page.errors.clear()
        error.get_by_role("button", name="Close").click()
        expect(error).to_be_hidden()
        stop(page, proc)


@pytest.mark.slow
def test_epoch_and_step_axes_tick_whole_numbers(page, api, server):
    with training(server.url, "two", "--epochs", "2", "--steps", "20") as proc:
        finish(proc)
    open_run(page, "two")
    assert x_ticks(page, "loss (epoch: train and validation)") == ["0", "1"]
    steps = x_ticks(page, "loss (batch)")
    assert steps and all(re.fullmatch(r"\d+", t) for t in steps), steps
    assert len(set(steps)) == len(steps)
    page.select_option("#xmode", "epoch")
    page.wait_for_function(
        f"() => ({CHART})('loss (batch)').querySelector('.plot').layout.xaxis.title.text === 'epoch'"
    )
    assert x_ticks(page, "loss (epoch: train and validation)") == ["0", "1"]


def test_a_chart_of_one_point_ticks_that_point_only(page, api):
    create_run(api, "one")
    post_logs(
        api,
        "one",
        [
            {"seq": 0, "scope": "epoch", "step": 0, "epoch": 0, "wall_time": 1_700_000_000.0, "metrics": {"loss": 0.5}},
            {"seq": 1, "scope": "system", "step": 0, "wall_time": 1_700_000_001.0, "metrics": {"cpu_percent": 12.0}},
        ],
    )
    open_run(page, "one")
    assert x_ticks(page, "loss (epoch: train and validation)") == ["0"]
    cpu = full_axis(page, "cpu_percent (system)")
    assert cpu["type"] == "date"
    low, high = (page.evaluate("d => Date.parse(d.replace(' ', 'T') + 'Z') / 1000", d) for d in cpu["range"])
    assert low < 1_700_000_001.0 < high and high - low <= 600  # around the sample, not days of it


@pytest.mark.slow
def test_system_charts_are_drawn_by_wall_time_beside_the_training(page, api, server):
    with training(server.url, "sys", "--system-interval", "0.2") as proc:
        wait_for(
            lambda: (
                logged(api, "sys")
                and any(s["scope"] == "system" and s["count"] >= 2 for s in api.get("/api/v1/runs/sys/series").json())
            ),
            120,
            "two system samples",
        )
        open_run(page, "sys")
        cpu = full_axis(page, "cpu_percent (system)")
        assert cpu["type"] == "date" and cpu["title"] != "sample"
        page.select_option("#xmode", "wall")
        page.wait_for_function(
            f"() => ({CHART})('loss (batch)').querySelector('.plot')._fullLayout.xaxis.type === 'date'"
        )
        training_range = full_axis(page, "loss (batch)")["range"]
        system_range = full_axis(page, "cpu_percent (system)")["range"]
        assert system_range[0] < training_range[1] and training_range[0] < system_range[1]  # the same stretch of time
        stop(page, proc)


LR_REACH = f"""() => {{
    const lr = ({CHART})('learning rate').querySelector('.plot').data[0];
    const loss = ({CHART})('loss (batch)').querySelector('.plot').data[0];
    return lr.x.length > 1 && lr.x.at(-1) === loss.x.at(-1) ? lr.x.at(-1) : false;
}}"""


@pytest.mark.slow
def test_the_learning_rate_is_a_step_line_to_the_latest_step(page, api, server):
    with training(server.url, "rate") as proc:
        wait_for(lambda: logged(api, "rate", 50), 120, "the training to log")
        open_run(page, "rate")
        reach = page.wait_for_function(LR_REACH).json_value()
        assert reach > 50
        assert set(traces(page, "learning rate")[0]["y"]) == {0.01}
        line = page.evaluate(
            f"() => ({CHART})('learning rate').querySelector('.scatterlayer .trace path.js-line').getBBox().width"
        )
        assert line > 100  # a line across the chart, not a dot
        page.wait_for_function(f"reach => ({LR_REACH})() > reach", arg=reach)  # it follows the training live
        stop(page, proc)


def annotation_boxes(page, title: str) -> list[dict]:
    return page.evaluate(
        f"""title => [...({CHART})(title).querySelectorAll('.annotation')].map(a => {{
            const r = a.getBoundingClientRect();
            return {{left: r.left, right: r.right, top: r.top, bottom: r.bottom, text: a.textContent}};
        }})""",
        title,
    )


def overlap(a: dict, b: dict) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


@pytest.mark.slow
def test_markers_of_close_commands_do_not_overlap_and_show_all_on_hover(page, api, server):
    with training(server.url, "close") as proc:
        wait_for(lambda: logged(api, "close"), 120, "the training to log")
        at = last_step(api, "close") + 1000
        for i, value in enumerate((0.05, 0.04, 0.03)):
            body = {"type": "set_lr", "args": {"value": value}, "at": {"step": at + i}}
            assert api.post("/api/v1/runs/close/commands", json=body).status_code == 201
        open_run(page, "close")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#commands tr .badge')].filter(b => b.textContent === 'applied').length === 3",
            timeout=60_000,
        )
        stop(page, proc)  # a chart that no longer grows holds its labels still under the mouse
        page.wait_for_function(
            f"() => ({CHART})('loss (batch)').querySelector('.plot').layout.shapes.length === 4"  # 3 rates, 1 stop
        )
        boxes = annotation_boxes(page, "loss (batch)")
        assert not [(a["text"], b["text"]) for a, b in combinations(boxes, 2) if overlap(a, b)]
        chart = page.locator(".chart", has_text="loss (batch)")
        chart.locator(".annotation-text", has_text=re.compile("^lr 0.05")).hover()
        hover = chart.locator(".hoverlayer")
        for text in ("lr 0.05", "lr 0.04", "lr 0.03"):
            expect(hover).to_contain_text(text)


def test_values_plotly_cannot_draw_are_marked_with_their_value(page, api):
    create_run(api, "huge")
    values = ["NaN", 2.0, 2.0, 1e308, 2.0, -1e306, 2.0]
    records = [
        {"seq": i, "scope": "batch", "step": i, "wall_time": 1_700_000_000.0 + i, "metrics": {"loss": v}}
        for i, v in enumerate(values)
    ]
    post_logs(api, "huge", records)
    open_run(page, "huge")
    [line, marks] = traces(page, "loss (batch)")
    assert (marks["x"], marks["text"]) == ([0, 3, 5], ["NaN", "1.000e+308", "-1.000e+306"])
    low, high = full_axis(page, "loss (batch)", "yaxis")["range"]
    assert all(low <= y <= high for y in marks["y"])  # each mark in sight, the first one too
    assert line["y"] == [None, 2.0, 2.0, None, 2.0, None, 2.0]
    note = page.locator(".chart", has_text="loss (batch)").locator(".too-large")
    expect(note).to_have_text("2 values too large to draw")


def test_an_unknown_run_or_page_is_a_not_found_page_and_the_api_keeps_json(page, api):
    for path in ("/runs/does-not-exist", "/no/such/page", "/runs/not%20an%20id"):
        response = page.goto(path)
        assert response.status == 404 and response.headers["content-type"].startswith("text/html")
        expect(page.locator("h1")).to_have_text("Not found")
        expect(page.locator("#live")).to_have_count(0)
    page.goto("/runs/does-not-exist")
    expect(page.locator("main")).to_contain_text("does-not-exist")
    page.get_by_role("link", name="the run list").click()
    page.wait_for_url("**/")
    page.wait_for_selector(READY)
    page.errors.clear()  # the browser logs each 404 it loaded

    assert assert_error(api.get("/api/v1/runs/does-not-exist"), 404) == "run 'does-not-exist' not found"
    assert assert_error(api.get("/api/v1/no-such-thing"), 404)
    assert assert_error(api.post("/no/such/page", json={}), 404)  # only a person's GET gets the page
    create_run(api, "here")
    assert api.get("/runs/here").status_code == 200


def test_where_reads_need_a_token_the_run_page_tells_no_one_which_runs_exist(start_server):
    server = start_server(token="s3cret", protect_reads=True)
    with server.client() as anonymous:
        assert anonymous.get("/runs/does-not-exist").status_code == 200  # the page asks for the token
        assert_error(anonymous.get("/api/v1/runs/does-not-exist"), 401)


def test_a_run_with_no_training_offers_stop_and_pause_and_says_why(page, api):
    create_run(api, "bare")
    open_run(page, "bare")
    expect(page.locator("#stop")).to_be_visible()
    expect(page.locator("#pause")).to_be_visible()
    expect(page.locator("#lr-form")).to_be_hidden()
    expect(page.locator("#checkpoint-form")).to_be_hidden()
    expect(page.locator("#controls")).not_to_contain_text("current rate")
    expect(page.locator("#controls-reason")).to_contain_text("No training has said what it can steer")


LOOP = """
import sys, time
from client_callbacks import MonitorClient

with MonitorClient(url=sys.argv[1], run_id="loop", run_name="loop", flush_interval=0.05, system_interval=None) as client:
    step = 0
    while True:
        client.log("batch", step, {"loss": 1 / (step + 1)})
        taken = client.take_commands(step)
        for command in taken:
            client.ack(command["id"], "applied", "the loop ends", step=step)
        if any(c["type"] == "stop_training" for c in taken):
            break
        step += 1
        time.sleep(0.01)
"""


def test_a_loop_that_reports_no_controls_is_stopped_from_the_page(page, api, server):
    proc = subprocess.Popen([sys.executable, "-c", LOOP, server.url], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: has_points(api, "loop"), 60, "the loop to log")
        open_run(page, "loop")
        expect(page.locator("#controls-reason")).to_contain_text("No training has said what it can steer")
        expect(page.locator("#lr-form")).to_be_hidden()
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#stop")
        page.locator("#commands tr", has_text="stop_training").locator(".badge", has_text="applied").wait_for(
            timeout=60_000
        )
        finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


@pytest.mark.slow
def test_commands_are_numbered_within_the_run_and_sent_to_the_second(page, api, server):
    create_run(api, "other")
    for _ in range(5):
        api.post("/api/v1/runs/other/commands", json={"type": "stop_training"})
    with training(server.url, "numbered") as proc:
        wait_for(lambda: has_points(api, "numbered"), 120, "the training to log")
        open_run(page, "numbered")
        for n, value in enumerate(("0.05", "0.04", "0.03"), start=1):
            page.fill("#lr-value", value)
            page.click("#lr-set")
            page.wait_for_function(f"() => document.querySelectorAll('#commands tr').length === {n}")
        numbers = page.locator("#commands tr td:first-child").all_inner_texts()
        assert numbers == ["3", "2", "1"]  # newest first
        first = page.locator("#commands tr", has_text="set_lr 0.05")
        assert first.locator("td").first.inner_text() == "1"
        sent = first.locator("td").last.inner_text()
        assert re.search(r"\d:\d\d:\d\d", sent), sent
        stop(page, proc)


@pytest.mark.slow
def test_a_rate_that_follows_a_schedule_is_shown_and_not_offered(page, api, server):
    with training(server.url, "sched", "--schedule") as proc:
        wait_for(lambda: has_points(api, "sched"), 120, "the training to log")
        wait_for(lambda: api.get("/api/v1/runs/sched").json()["controls"], 60, "the training's controls")
        open_run(page, "sched")
        expect(page.locator("#lr-current")).to_contain_text("follows a schedule")
        expect(page.locator("#lr-set")).to_be_hidden()
        expect(page.locator("#lr-half")).to_be_hidden()
        expect(page.locator("#lr-value")).to_be_hidden()
        expect(page.locator("#stop")).to_be_visible()
        expect(page.locator("#checkpoint-form")).to_be_visible()
        stop(page, proc)


@pytest.mark.slow
def test_a_failed_checkpoint_shows_its_error_in_one_line_and_the_rest_on_demand(page, api, server, tmp_path):
    with training(server.url, "nosave", "--unsaveable", "--checkpoint-dir", str(tmp_path)) as proc:
        wait_for(lambda: has_points(api, "nosave"), 120, "the training to log")
        wait_for(lambda: api.get("/api/v1/runs/nosave").json()["controls"], 60, "the training's controls")
        open_run(page, "nosave")
        page.click("#checkpoint-form button")
        failed = page.locator("#commands tr", has_text="checkpoint")
        failed.locator(".badge", has_text="failed").wait_for(timeout=60_000)
        message = failed.locator("td").nth(4)
        summary = message.locator("summary")
        expect(summary).to_have_text(re.compile(r"^NotImplementedError: Object Unsaveable was created by passing .*"))
        assert "\n" not in summary.inner_text()
        more = message.locator("details pre")
        expect(more).to_be_hidden()
        summary.click()
        expect(more).to_be_visible()
        expect(more).to_contain_text("Example:")
        stop(page, proc)
        expect(more).to_be_visible()  # still open after the table showed the stop


@contextmanager
def phone_page(browser, server) -> Iterator[object]:
    """A page at a phone's size; console errors fail the test."""
    context = browser.new_context(base_url=server.url, viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.errors = []
    watch(page, page.errors)
    try:
        yield page
    finally:
        context.close()
    assert not page.errors, page.errors


@pytest.mark.slow
def test_the_run_page_and_the_not_found_page_fit_a_phone(browser, api, server, tmp_path):
    with phone_page(browser, server) as page:
        response = page.goto("/runs/nowhere")
        assert response.status == 404
        assert_no_page_overflow(page)
        expect(page.get_by_role("link", name="the run list")).to_be_in_viewport()
        page.errors.clear()

        with training(server.url, "pocket", "--unsaveable", "--checkpoint-dir", str(tmp_path)) as proc:
            wait_for(lambda: logged(api, "pocket", 20), 120, "the training to log")
            wait_for(lambda: api.get("/api/v1/runs/pocket").json()["controls"], 60, "the training's controls")
            open_run(page, "pocket")
            page.locator("#lr-value").fill("100")
            page.locator("#lr-set").tap()
            close = page.locator("#error").get_by_role("button", name="Close")
            expect(close).to_be_visible()
            assert_no_page_overflow(page)
            page.errors.clear()
            close.tap()
            expect(page.locator("#error")).to_be_hidden()

            page.locator("#checkpoint-form button").tap()
            failed = page.locator("#commands tr", has_text="checkpoint")
            failed.locator(".badge", has_text="failed").wait_for(timeout=60_000)
            failed.locator("summary").tap()
            expect(failed.locator("details pre")).to_be_visible()
            assert_no_page_overflow(page)
            steps = x_ticks(page, "loss (batch)")
            assert steps and all(re.fullmatch(r"\d+", t) for t in steps), steps
            page.wait_for_function(LR_REACH)
            stop(page, proc)
