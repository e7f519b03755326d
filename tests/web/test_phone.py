"""The dashboard on a phone (390 x 844) and on a wide screen. On a phone nothing is wider
than the screen and a real training is still watched, steered and stopped; on a wide
screen the charts fill the rows and follow the window's width."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import pairwise

import pytest
from playwright.sync_api import expect

from tests.support.api import create_run, make_records, post_logs
from tests.support.pages import watch
from tests.support.waiting import wait_for
from tests.web.test_live_training import READY, has_points, training

PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1440, "height": 900}
WIDE = {"width": 2400, "height": 1200}
EPOCH = [
    {"seq": 100, "scope": "epoch", "step": 0, "epoch": 0, "wall_time": 2.0, "metrics": {"loss": 0.5, "accuracy": 0.8}}
]

# Every chart's plot drawn to its box's width: Plotly has caught up with the page's layout.
PLOTS_FIT = """() => {
    const plots = [...document.querySelectorAll('.chart .plot')];
    return plots.length > 0 && plots.every(p => {
        const svg = p.querySelector('.main-svg');
        return svg && Math.abs(svg.getBoundingClientRect().width - p.clientWidth) < 1;
    });
}"""


@pytest.fixture
def page_at(browser, server) -> Iterator[Callable[..., object]]:
    """`page_at(viewport, phone=False)`: a fresh page in a context of that size (a phone's
    honours the viewport meta tag and has touch); console errors fail the test, as with `page`."""
    contexts, errors = [], []

    def open_page(viewport: dict, phone: bool = False):
        context = browser.new_context(base_url=server.url, viewport=viewport, is_mobile=phone, has_touch=phone)
        contexts.append(context)
        page = context.new_page()
        watch(page, errors)
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not errors, errors


def assert_no_page_overflow(page) -> None:
    """Laid out at the screen's width and no wider. A phone widens its layout viewport to fit
    wide content, so the page is measured against its own visible width too."""
    scroll, client, inner = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth, window.innerWidth]"
    )
    assert inner == page.viewport_size["width"], inner
    assert scroll <= client, (scroll, client)


def boxes(page, selector: str) -> list[dict]:
    return page.evaluate(
        "s => [...document.querySelectorAll(s)].map(e => { const r = e.getBoundingClientRect(); "
        "return {left: r.left, right: r.right, top: r.top, width: r.width}; })",
        selector,
    )


def content_box(page) -> dict:
    """The left and right edges of the page's content: `main` within its padding."""
    return page.evaluate(
        """() => {
            const main = document.querySelector('main'), r = main.getBoundingClientRect(), style = getComputedStyle(main);
            return {left: r.left + parseFloat(style.paddingLeft), right: r.right - parseFloat(style.paddingRight)};
        }"""
    )


def first_row(page) -> list[dict]:
    charts = boxes(page, ".chart")
    return [c for c in charts if abs(c["top"] - charts[0]["top"]) < 1]


def command_row(page, text: str):
    return page.locator("#commands tr", has_text=text)


@pytest.mark.slow
def test_a_real_training_is_watched_steered_and_stopped_on_a_phone(page_at, api, server):
    with training(server.url, "pocket") as proc:
        wait_for(lambda: has_points(api, "pocket"), 120, "the training to log")
        page = page_at(PHONE, phone=True)
        page.goto("/runs/pocket")
        page.wait_for_selector(READY)
        expect(page.locator("#run-status .badge")).to_have_text("running")
        expect(page.locator("#run-latest")).to_contain_text("loss")  # the newest values, without a hover
        expect(page.locator("#run-latest")).to_be_visible()

        assert_no_page_overflow(page)
        charts, content = boxes(page, ".chart"), content_box(page)
        assert charts
        for chart in charts:  # one a row, as wide as the content
            assert chart["left"] >= 0 and chart["right"] <= PHONE["width"]
            assert abs(chart["left"] - content["left"]) < 1 and abs(chart["right"] - content["right"]) < 1
        assert all(a["top"] < b["top"] for a, b in pairwise(charts))
        assert all(box["width"] <= PHONE["width"] for box in boxes(page, ".chart .main-svg"))

        page.locator("#lr-value").fill("0.02")
        page.locator("#lr-set").tap()
        command_row(page, "set_lr 0.02").locator(".badge", has_text="applied").wait_for(timeout=60_000)

        stop = page.locator("#stop")
        stop.scroll_into_view_if_needed()
        expect(stop).to_be_in_viewport()
        page.once("dialog", lambda dialog: dialog.accept())
        stop.tap()
        command_row(page, "stop_training").locator(".badge", has_text="applied").wait_for(timeout=60_000)
        expect(page.locator("#run-status .badge")).to_have_text("stopped", timeout=60_000)
        _, errors = proc.communicate(timeout=60)
        assert proc.returncode == 0, errors

    assert api.get("/api/v1/runs/pocket").json()["status"] == "stopped"
    assert [(c["type"], c["status"]) for c in api.get("/api/v1/runs/pocket/commands").json()] == [
        ("set_lr", "applied"),
        ("stop_training", "applied"),
    ]
    assert_no_page_overflow(page)  # with the commands table filled


def test_the_run_list_fits_a_phone_with_long_names_and_tags(page_at, api):
    metrics = {"loss": 0.5, "val_loss": 0.6, "sparse_categorical_accuracy": 0.9, "val_sparse_categorical_accuracy": 0.8}
    for i in range(3):
        name = f"resnet50-imagenet-{i}-" + "very-long-name-" * 6 + "x" * 40
        create_run(api, f"r{i}", name=name, project="p" * 60)
        tags = ["baseline-with-a-long-tag-name", "t" * 50, "gpu"]
        api.patch(f"/api/v1/runs/r{i}", json={"tags": tags, "note": "why this run " * 20})
        epoch = {"seq": 0, "scope": "epoch", "step": 0, "epoch": 0, "wall_time": 1.0, "metrics": metrics}
        assert post_logs(api, f"r{i}", [epoch]).is_success
    page = page_at(PHONE, phone=True)
    page.goto("/")
    page.wait_for_selector(READY)
    expect(page.locator("#runs tr")).to_have_count(3)
    expect(page.locator("#runs td.latest").first).to_contain_text("val_sparse_categorical_accuracy")

    assert_no_page_overflow(page)
    for selector in ("#runs tr td:nth-child(2) a", "#runs tr .badge"):  # each run's name and status, on screen
        shown = boxes(page, selector)
        assert len(shown) == 3
        assert all(box["left"] >= 0 and box["right"] <= PHONE["width"] for box in shown), shown


@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_selecting_every_run_that_matches_fits_the_screen(page_at, api, viewport):
    for i in range(60):
        create_run(api, f"r{i:02d}", name=f"run-{i:02d}", project="a-project-with-a-longer-name")
    page = page_at(viewport, phone=viewport is PHONE)
    page.goto("/?project=a-project-with-a-longer-name")
    page.wait_for_selector(READY)
    page.get_by_role("checkbox", name="select every run on this page").check()
    expect(page.locator("#select-matching")).to_be_visible()
    assert_no_page_overflow(page)
    page.locator("#select-matching").click()
    expect(page.locator("#selection")).to_have_text("All 60 runs that match selected")
    assert_no_page_overflow(page)
    for selector in ("#selection", "#clear-selection", "#fleet-stop", "#compare"):
        [box] = boxes(page, selector)
        assert box["left"] >= 0 and box["right"] <= viewport["width"], (selector, box)


LONG_PROJECT = "imagenet-resnet50-ablation-" + "sweep-with-a-long-project-name-" * 3
LONG_METRIC = "val_sparse_top_5_categorical_accuracy_" + "on_the_held_out_images_" * 3
# Lines of text an element's content takes.
LINES = """e => { const r = document.createRange(); r.selectNodeContents(e);
    return new Set([...r.getClientRects()].map(b => Math.round(b.top))).size; }"""
CUT = "e => e.scrollWidth > e.clientWidth"  # shown shorter than it is


@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_long_project_and_metric_names_are_cut_short_and_named_in_full_on_hover(page_at, api, viewport):
    epoch = {"seq": 0, "scope": "epoch", "step": 0, "epoch": 0, "wall_time": 1.0}
    for i in range(3):
        create_run(api, f"r{i}", name=f"run-{i}", project=LONG_PROJECT)
        assert post_logs(api, f"r{i}", [{**epoch, "metrics": {"loss": 0.5, LONG_METRIC: 0.9}}]).is_success
    page = page_at(viewport, phone=viewport is PHONE)
    page.goto("/")
    page.wait_for_selector(READY)
    expect(page.locator("#runs tr")).to_have_count(3)

    # A filter chosen is named in full on hover; the list is drawn again with it.
    page.select_option("#project", LONG_PROJECT)
    expect(page.locator("#project")).to_have_attribute("title", LONG_PROJECT)
    filters = [page.locator("#project")]
    if viewport is LAPTOP:  # a phone leaves out the project and metric columns
        page.select_option("#metric", LONG_METRIC)
        expect(page.locator("#metric")).to_have_attribute("title", LONG_METRIC)
        filters.append(page.locator("#metric"))
        project = page.locator(f'#runs td [title="{LONG_PROJECT}"]')
        expect(project).to_have_count(3)
        assert project.first.evaluate(CUT)
        started = page.evaluate(
            "() => [...document.querySelectorAll('thead th')].findIndex(th => th.dataset.sort === 'started')"
        )
        assert [tr.locator("td").nth(started).evaluate(LINES) for tr in page.locator("#runs tr").all()] == [1, 1, 1]
    for select in filters:  # cut short too
        assert select.bounding_box()["width"] <= 300, select.bounding_box()
    metric = page.locator(f'#runs td.latest [title="{LONG_METRIC}"]')
    expect(metric).to_have_count(3)
    assert metric.first.evaluate(CUT) and metric.first.evaluate(LINES) == 1
    assert_no_page_overflow(page)
    assert page.locator(".scroll").evaluate("e => e.scrollWidth <= e.clientWidth")  # the table fits too


def test_charts_fill_a_wide_screen_and_follow_its_width(page_at, api):
    create_run(api, "r1", name="wide")
    post_logs(api, "r1", make_records(50))  # batch loss and accuracy: two charts
    page = page_at(WIDE)
    page.goto("/runs/r1")
    page.wait_for_selector(READY)
    page.wait_for_function(PLOTS_FIT)
    content = content_box(page)
    assert len(first_row(page)) == 2
    assert abs(first_row(page)[-1]["right"] - content["right"]) < 2

    # Epochs arrive live: their charts join the row, and the batch charts, narrower now
    # without any window resize, are drawn again to their new width.
    post_logs(api, "r1", EPOCH)
    page.wait_for_function("() => document.querySelectorAll('.chart').length === 4")
    page.wait_for_function(PLOTS_FIT)
    row = first_row(page)
    assert len(row) > 2
    assert abs(row[0]["left"] - content["left"]) < 2 and abs(row[-1]["right"] - content["right"]) < 2
    assert_no_page_overflow(page)

    page.set_viewport_size({"width": 1000, "height": 900})  # the window narrows: drawn again to fit
    page.wait_for_function(PLOTS_FIT)
    assert_no_page_overflow(page)
    assert all(chart["right"] <= content_box(page)["right"] for chart in boxes(page, ".chart"))

    create_run(api, "r2", name="other")
    post_logs(api, "r2", make_records(50) + EPOCH)  # compare shows epoch loss: both runs have it
    page.set_viewport_size(WIDE)
    page.goto("/compare?runs=r1,r2")
    page.wait_for_selector(READY)
    page.wait_for_function(PLOTS_FIT)
    [chart], content = boxes(page, ".chart"), content_box(page)
    assert abs(chart["left"] - content["left"]) < 2 and abs(chart["right"] - content["right"]) < 2


def test_a_report_opened_on_a_phone_fits_its_screen(page_at, api, tmp_path):
    """The report file, mailed and opened on a phone: its charts drawn to the screen's
    width, and a wide evaluation table or config scrolls in its own box, not the page."""
    create_run(api, "r1", name="report-" + "x" * 80, config={"layers": ["dense"] * 40, "note": "n" * 300})
    post_logs(api, "r1", make_records(50) + EPOCH)
    metrics = {f"metric_number_{k}": 0.5 for k in range(12)}
    evaluation = {"seq": 200, "scope": "eval", "step": 50, "wall_time": 3.0, "metrics": metrics}
    assert post_logs(api, "r1", [evaluation]).is_success
    report = tmp_path / "report.html"  # as it is downloaded, and opened from disk
    report.write_text(api.get("/runs/r1/report.html").text)
    page = page_at(PHONE, phone=True)
    page.goto(report.as_uri())
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
    assert_no_page_overflow(page)
    plots = boxes(page, ".js-plotly-plot")
    assert plots and all(box["left"] >= 0 and box["right"] <= PHONE["width"] for box in plots), plots
    table = page.locator(".evals")  # wider than the screen, in a box that scrolls
    assert table.evaluate("t => t.scrollWidth > t.parentElement.clientWidth")
