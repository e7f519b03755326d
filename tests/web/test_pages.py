"""The dashboard in a real Chromium against a real server: live list, live curves,
controls, zoom, non-finite markers, compare, the offline report, and data as text."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.support.api import TRAINING, create_run, make_records, post_logs

READY = "body[data-ready=true]"


def plot_data(page, title: str) -> list[dict]:
    """The traces of the chart with this title, as Plotly holds them."""
    return page.evaluate(
        """title => {
            const chart = [...document.querySelectorAll('.chart')].find(c => c.querySelector('h3').textContent === title);
            return chart ? chart.querySelector('.plot').data.map(t => ({name: t.name, x: t.x, y: t.y, text: t.text || null})) : null;
        }""",
        title,
    )


def open_run(page, run_id: str) -> None:
    page.goto(f"/runs/{run_id}")
    page.wait_for_selector(READY)


def test_run_list_shows_runs_and_their_status_live(page, api):
    create_run(api, "r1", name="first", project="vision")
    page.goto("/")
    page.wait_for_selector(READY)
    row = page.locator("tr[data-id=r1]")
    assert row.locator("td").nth(1).inner_text() == "first"
    assert row.locator(".badge").inner_text() == "running"

    api.patch("/api/v1/runs/r1", json={"status": "finished", "reason": "all 3 epochs done"})
    page.wait_for_selector("tr[data-id=r1][data-status=finished]")
    create_run(api, "r2", name="second", project="text")
    page.wait_for_selector("tr[data-id=r2]")

    page.select_option("#project", "text")
    expect(page.locator("#runs tr a")).to_have_text(["second"])
    page.select_option("#project", "")
    page.select_option("#status", "finished")
    expect(page.locator("#runs tr a")).to_have_text(["first"])


def test_empty_list_says_how_to_start(page):
    page.goto("/")
    page.wait_for_selector(READY)
    assert "RemoteCallback" in page.locator("#empty").inner_text()
    assert page.locator("#empty").is_visible()


def test_run_page_draws_stored_points_and_new_points_live(page, api):
    create_run(api, "r1", name="live")
    post_logs(api, "r1", make_records(50))
    open_run(page, "r1")
    assert len(plot_data(page, "loss (batch)")[0]["x"]) == 50

    post_logs(api, "r1", make_records(1, start=50))  # bench/pages.py times this; here it must arrive
    page.wait_for_function("() => document.querySelector('.plot').data[0].x.length === 51")
    assert plot_data(page, "loss (batch)")[0]["x"][-1] == 50


def test_epoch_chart_puts_train_and_validation_together(page, api):
    create_run(api, "r1")
    records = [
        {
            "seq": i,
            "scope": "epoch",
            "step": i,
            "epoch": i,
            "wall_time": 1.0 + i,
            "metrics": {"loss": 1.0 / (i + 1), "val_loss": 1.5 / (i + 1)},
        }
        for i in range(3)
    ]
    post_logs(api, "r1", records)
    open_run(page, "r1")
    traces = plot_data(page, "loss (epoch: train and validation)")
    assert [t["name"] for t in traces] == ["train", "validation"]
    assert traces[1]["y"] == [1.5, 0.75, 0.5]


def test_stop_and_set_lr_send_commands_and_the_history_updates_live(page, api):
    create_run(api, "r1")
    api.patch("/api/v1/runs/r1", json={"controls": {"params": {"learning_rate": 0.01}}})  # what a training reports
    open_run(page, "r1")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#stop")
    page.wait_for_selector("#commands tr")
    [command] = api.get("/api/v1/runs/r1/commands").json()
    assert command["type"] == "stop_training"
    assert page.locator("#commands tr .badge").inner_text() == "pending"

    page.fill("#lr-value", "abc")
    page.click("#lr-set")
    assert len(api.get("/api/v1/runs/r1/commands").json()) == 1  # refused in the page
    page.fill("#lr-value", "0.005")
    page.click("#lr-set")
    page.wait_for_function("() => document.querySelectorAll('#commands tr').length === 2")
    lr = api.get("/api/v1/runs/r1/commands").json()[1]
    assert (lr["type"], lr["args"]) == ("set_lr", {"value": 0.005})

    api.get("/api/v1/runs/r1/commands", params={"status": "pending"}, headers=TRAINING)  # the training fetches them
    api.post(f"/api/v1/runs/r1/commands/{lr['id']}/ack", json={"status": "failed", "message": "the rate is a schedule"})
    row = page.locator(f"#commands tr[data-id='{lr['id']}']")
    row.locator(".badge", has_text="failed").wait_for()
    assert "the rate is a schedule" in row.inner_text()
    assert page.locator(f"#commands tr[data-id='{command['id']}'] .badge").inner_text() == "delivered"


def test_stop_asks_for_confirmation(page, api):
    create_run(api, "r1")
    open_run(page, "r1")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#stop")
    page.wait_for_timeout(300)
    assert api.get("/api/v1/runs/r1/commands").json() == []


def test_controls_are_disabled_with_a_reason_when_the_run_is_not_running(page, api):
    create_run(api, "r1")
    open_run(page, "r1")
    assert page.locator("#stop").is_enabled()
    api.patch("/api/v1/runs/r1", json={"status": "finished"})
    page.wait_for_selector("#stop:disabled")
    assert page.locator("#lr-value").is_disabled()
    assert page.locator("#controls-reason").inner_text() == "Controls are off: the run is finished."


def test_applied_commands_are_marked_on_batch_charts(page, api):
    create_run(api, "r1")
    post_logs(api, "r1", make_records(20))
    command = api.post("/api/v1/runs/r1/commands", json={"type": "set_lr", "args": {"value": 0.5}}).json()
    api.get("/api/v1/runs/r1/commands", params={"status": "pending"}, headers=TRAINING)
    api.post(f"/api/v1/runs/r1/commands/{command['id']}/ack", json={"status": "applied", "step": 12})
    open_run(page, "r1")
    shapes = page.evaluate("() => document.querySelector('.plot').layout.shapes.map(s => s.x0)")
    notes = page.evaluate("() => document.querySelector('.plot').layout.annotations.map(a => a.text)")
    assert shapes == [12] and notes == ["lr 0.5"]


def test_names_from_data_are_shown_as_text(page, api):
    evil = "<img src=x onerror=alert(1)>"
    create_run(api, "r1", name=evil, config={"note": "<script>alert(2)</script>"})
    post_logs(api, "r1", [{"seq": 0, "scope": "batch", "step": 0, "wall_time": 1.0, "metrics": {"<b>m</b>": 1.0}}])
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto("/")
    page.wait_for_selector(READY)
    assert page.locator("tr[data-id=r1] a").inner_text() == evil
    open_run(page, "r1")
    assert page.locator("#run-name").inner_text() == evil
    assert page.locator("h3", has_text="<b>m</b> (batch)").count() == 1
    assert "<script>alert(2)</script>" in page.locator("#config").text_content()
    assert page.locator("img").count() == 0 and page.locator("main script").count() == 0
    assert dialogs == []


def test_zoom_asks_the_server_for_the_range_at_full_resolution(page, api):
    create_run(api, "r1")
    post_logs(api, "r1", make_records(5000))
    open_run(page, "r1")
    badge = page.locator(".chart", has_text="loss (batch)").locator(".badge.downsampled")
    assert badge.is_visible() and "/ 5,000" in badge.inner_text()

    with page.expect_request(lambda r: "/series/batch/loss" in r.url and "since_step=1000" in r.url) as request:
        page.evaluate("""() => {
            const plot = [...document.querySelectorAll('.chart')].find(c => c.querySelector('h3').textContent === 'loss (batch)').querySelector('.plot');
            Plotly.relayout(plot, {'xaxis.range': [1000, 1300]});
        }""")
    assert "until_step=1300" in request.value.url
    page.wait_for_function(
        """() => {
        const plot = [...document.querySelectorAll('.chart')].find(c => c.querySelector('h3').textContent === 'loss (batch)').querySelector('.plot');
        return plot.data[0].x.length === 301;
    }""",
    )
    assert badge.is_hidden()


def test_nan_and_infinity_are_marked_not_dropped(page, api):
    create_run(api, "r1")
    records = make_records(10)
    records[3]["metrics"]["loss"] = "NaN"
    records[7]["metrics"]["loss"] = "Infinity"
    post_logs(api, "r1", records)
    open_run(page, "r1")
    traces = plot_data(page, "loss (batch)")
    marks = [t for t in traces if t["name"] == "loss: non-finite"]
    assert marks and marks[0]["x"] == [3, 7] and marks[0]["text"] == ["NaN", "+Infinity"]
    assert traces[0]["y"][3] is None and traces[0]["y"][7] is None


def test_compare_overlays_two_runs(page, api):
    for run_id, scale in (("a", 1.0), ("b", 2.0)):
        create_run(api, run_id, name=f"run {run_id}")
        post_logs(
            api,
            run_id,
            [
                {
                    "seq": i,
                    "scope": "epoch",
                    "step": i,
                    "epoch": i,
                    "wall_time": 1.0 + i,
                    "metrics": {"loss": scale / (i + 1)},
                }
                for i in range(4)
            ],
        )
    page.goto("/compare?runs=a,b")
    page.wait_for_selector(READY)
    traces = page.evaluate("() => document.querySelector('.plot').data.map(t => [t.name, t.y])")
    assert traces == [["run a", [1.0, 0.5, 1 / 3, 0.25]], ["run b", [2.0, 1.0, 2 / 3, 0.5]]]
    post_logs(
        api, "b", [{"seq": 9, "scope": "epoch", "step": 4, "epoch": 4, "wall_time": 9.0, "metrics": {"loss": 0.4}}]
    )
    page.wait_for_function("() => document.querySelector('.plot').data[1].x.length === 5")


def test_list_selection_opens_compare(page, api):
    create_run(api, "a", name="run a")
    create_run(api, "b", name="run b")
    page.goto("/")
    page.wait_for_selector(READY)
    page.check("tr[data-id=a] input")
    page.check("tr[data-id=b] input")
    page.click("#compare")
    page.wait_for_url("**/compare?runs=*")
    assert sorted(page.url.split("runs=")[1].split(",")) == ["a", "b"]


def test_report_opens_from_a_file_with_no_network(browser, api, tmp_path):
    create_run(api, "r1", name="report <me>")
    post_logs(api, "r1", [*make_records(30), evaluation(100, step=30, loss=0.25, accuracy="NaN")])
    response = api.get("/runs/r1/report.html", params={"download": 1})
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="r1-report.html"'
    path = tmp_path / "report.html"
    path.write_bytes(response.content)

    context = browser.new_context(offline=True)
    page = context.new_page()
    page.goto(path.as_uri())
    page.wait_for_selector(".plotly-graph-div .main-svg", timeout=10000)
    assert page.locator("h1").inner_text() == "report <me>"
    assert page.locator(".plotly-graph-div").count() == 2  # loss and accuracy; evaluations are a table
    rows = page.locator("table.evals tr").all_inner_texts()
    assert [r.split("\t") for r in rows] == [["step", "epoch", "loss", "accuracy"], ["30", "0", "0.25", "NaN"]]
    context.close()


def evaluation(seq: int, step: int, **metrics) -> dict:
    return {
        "seq": seq,
        "scope": "eval",
        "step": step,
        "epoch": 0,
        "wall_time": 1_700_000_500.0 + seq,
        "metrics": metrics,
    }


def test_evaluations_are_a_table_of_values_with_the_step_they_ran_at(page, api):
    create_run(api, "r1")
    post_logs(api, "r1", [*make_records(10), evaluation(100, step=10, loss=0.5, accuracy=0.75)])
    open_run(page, "r1")
    assert page.locator("h3", has_text="(eval)").count() == 0  # no one-point charts
    head = page.locator("#eval-head th").all_inner_texts()
    assert head == ["step", "epoch", "time", "loss", "accuracy"]
    cells = page.locator("#eval-rows tr").first.locator("td").all_inner_texts()
    assert (cells[0], cells[1], cells[3:]) == ("10", "0", ["0.5", "0.75"])

    post_logs(api, "r1", [evaluation(101, step=20, loss=0.4, accuracy=0.8, auc=0.9)])  # live
    page.wait_for_function("() => document.querySelectorAll('#eval-rows tr').length === 2")
    assert page.locator("#eval-head th").all_inner_texts()[-1] == "auc"
    assert page.locator("#eval-rows tr").nth(1).locator("td").all_inner_texts()[3:] == ["0.4", "0.8", "0.9"]


@pytest.mark.parametrize("protect_reads", [False, True], ids=["open", "protected-reads"])
def test_the_run_page_opens_the_report_and_downloads_it(browser, start_server, protect_reads):
    server = start_server(token="s3cret", protect_reads=protect_reads)
    with server.client(headers={"authorization": "Bearer s3cret"}) as api:
        create_run(api, "r1", name="linked report")
        post_logs(api, "r1", make_records(20))
    context = browser.new_context(base_url=server.url, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    context.on("weberror", lambda error: errors.append(str(error.error)))
    page.on("dialog", lambda d: d.accept("s3cret"))
    open_run(page, "r1")
    assert page.inner_text("#report") == "Open report"
    with context.expect_page() as opened:
        page.click("#report")
    report = opened.value
    report.wait_for_selector(".plotly-graph-div .main-svg")  # drawn in the browser, sandboxed
    assert report.locator("h1").inner_text() == "linked report"
    assert report.locator(".plotly-graph-div").count() == 2 and errors == []
    with page.expect_download() as download:
        page.click("#report-download")
    assert download.value.suggested_filename == "r1-report.html"
    assert "<h1>linked report</h1>" in Path(download.value.path()).read_text(encoding="utf-8")
    context.close()


def test_a_command_can_be_cancelled_from_its_row(page, api):
    create_run(api, "r1")
    command = api.post("/api/v1/runs/r1/commands", json={"type": "stop_training"}).json()
    open_run(page, "r1")
    row = page.locator(f"#commands tr[data-id='{command['id']}']")
    row.locator("button", has_text="Cancel").click()
    row.locator(".badge", has_text="cancelled").wait_for()
    assert api.get("/api/v1/runs/r1/commands").json()[0]["status"] == "cancelled"

    delivered = api.post("/api/v1/runs/r1/commands", json={"type": "stop_training"}).json()
    api.get("/api/v1/runs/r1/commands", params={"status": "pending"}, headers=TRAINING)  # the training has it
    row = page.locator(f"#commands tr[data-id='{delivered['id']}']")
    row.locator(".badge", has_text="delivered").wait_for()
    row.locator("button", has_text="Cancel").click()
    row.locator("text=cancel asked").wait_for()  # the training decides: it withdraws or says it applied it
    api.post(f"/api/v1/runs/r1/commands/{delivered['id']}/ack", json={"status": "cancelled"})
    row.locator(".badge", has_text="cancelled").wait_for()


@pytest.mark.parametrize(
    ("path", "scripts"),
    [("/", "'self'"), ("/runs/r1", "'self'"), ("/compare?runs=r1", "'self' 'unsafe-eval'")],  # compare: WebGL
)
def test_pages_send_security_headers(api, path, scripts):
    create_run(api, "r1")
    response = api.get(path)
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert f"script-src {scripts};" in policy and "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"


def test_plotly_is_served_compressed_and_cacheable(api):
    response = api.get("/static/plotly.min.js", headers={"accept-encoding": "gzip"})
    assert response.status_code == 200 and response.headers["content-encoding"] == "gzip"
    assert "max-age" in response.headers["cache-control"]
    assert "Plotly" in response.text[:5000] or len(response.content) > 1_000_000
    again = api.get("/static/plotly.min.js", headers={"if-none-match": response.headers["etag"]})
    assert again.status_code == 304


def test_smoothing_log_y_and_x_axis_controls(page, api):
    create_run(api, "r1", config={"fit": {"steps": 10}})
    post_logs(api, "r1", make_records(40))
    open_run(page, "r1")
    plot = "document.querySelector('.plot')"
    page.locator("#smoothing").fill("0.9")
    page.wait_for_function(f"() => {plot}.data.length === 2")
    raw, smooth = page.evaluate(f"() => {plot}.data.map(t => [t.opacity, t.y.slice(0, 3)])")
    assert raw[0] == 0.25 and smooth[1][0] == raw[1][0] and smooth[1][1] != raw[1][1]
    page.check("#logy")
    page.wait_for_function(f"() => {plot}.layout.yaxis.type === 'log'")
    page.select_option("#xmode", "epoch")
    page.wait_for_function(f"() => {plot}.data[0].x[20] === 2")  # step 20 of 10-step epochs
    page.select_option("#xmode", "wall")
    page.wait_for_function(f"() => {plot}.layout.xaxis.type === 'date'")


def test_page_asks_for_the_token_once_and_sends_it(browser, start_server, tmp_path):
    server = start_server(token="s3cret")
    with server.client(headers={"authorization": "Bearer s3cret"}) as api:
        create_run(api, "r1")
        api.patch("/api/v1/runs/r1", json={"controls": {"params": {"learning_rate": 0.01}}})
    context = browser.new_context(base_url=server.url)
    page = context.new_page()
    prompts = []
    page.on("dialog", lambda d: (prompts.append(d.type), d.accept("s3cret" if d.type == "prompt" else None)))
    open_run(page, "r1")
    page.click("#stop")
    page.wait_for_selector("#commands tr")
    page.fill("#lr-value", "0.1")
    page.click("#lr-set")
    page.wait_for_function("() => document.querySelectorAll('#commands tr').length === 2")
    assert prompts == ["confirm", "prompt"]  # the token is asked once, then kept
    assert page.evaluate("() => localStorage.getItem('fitwatch.token')") == "s3cret"
    context.close()
