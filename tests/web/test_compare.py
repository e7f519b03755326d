"""The compare page by epoch: runs with different steps per epoch line up on the epoch
axis, zoom reads each run's own steps, and run status follows live."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.support.api import create_run, post_logs
from tests.web.test_pages import READY

STEPS_PER_EPOCH = {"a": 10, "b": 25}


def batch_records(per_epoch: int, epochs: int) -> list[dict]:
    return [
        {"seq": i, "scope": "batch", "step": i, "epoch": i // per_epoch, "wall_time": 1.0 + i, "metrics": {"loss": 1.0}}
        for i in range(per_epoch * epochs)
    ]


def traces(page) -> dict[str, list[float]]:
    return page.evaluate("() => Object.fromEntries(document.querySelector('.plot').data.map(t => [t.name, t.x]))")


def test_runs_line_up_by_epoch_zoom_by_their_own_steps_and_show_status_live(page, api):
    for run_id, per_epoch in STEPS_PER_EPOCH.items():
        create_run(api, run_id, name=f"run {run_id}", config={"fit": {"steps": per_epoch, "epochs": 3}})
        post_logs(api, run_id, batch_records(per_epoch, 3))
    page.goto("/compare?runs=a,b")
    page.wait_for_selector(READY)
    page.select_option("#metric", "batch/loss")
    page.wait_for_function("() => document.querySelector('.plot')?.data?.[1]?.x.length === 75")
    assert max(traces(page)["run b"]) == 74  # by step, b runs 2.5 times as long

    page.select_option("#xmode", "epoch")
    page.wait_for_function("() => Math.max(...document.querySelector('.plot').data[1].x) < 3")
    by_epoch = traces(page)
    assert by_epoch["run a"] == [i / 10 for i in range(30)]
    assert by_epoch["run b"] == [i / 25 for i in range(75)]

    # Epochs 1 to 2: steps 10..20 of a, 25..50 of b, each read from the server.
    page.evaluate("() => Plotly.relayout(document.querySelector('.plot'), {'xaxis.range': [1, 2]})")
    page.wait_for_function("() => document.querySelector('.plot').data[1].x.length === 26")
    zoomed = traces(page)
    assert zoomed["run a"] == [i / 10 for i in range(10, 21)]
    assert zoomed["run b"] == [i / 25 for i in range(25, 51)]

    api.patch("/api/v1/runs/a", json={"status": "finished"})
    expect(page.locator("#legend li[data-id=a] .badge")).to_have_text("finished")
    expect(page.locator("#legend li[data-id=b] .badge")).to_have_text("running")


def epoch_records(metrics: dict[str, float], epochs: int = 3, seq: int = 1000) -> list[dict]:
    return [
        {"seq": seq + i, "scope": "epoch", "step": i, "epoch": i, "wall_time": 100.0 + i, "metrics": metrics}
        for i in range(epochs)
    ]


def test_compare_names_the_runs_that_lack_the_chosen_metric(page, api):
    for run_id, metrics in (("a", {"loss": 1.0, "val_loss": 1.5}), ("b", {"loss": 1.0}), ("c", {"loss": 2.0})):
        create_run(api, run_id, name=f"run {run_id}")
        post_logs(api, run_id, epoch_records(metrics))
    page.goto("/compare?runs=a,b,c")
    page.wait_for_selector(READY)
    expect(page.locator("#missing")).to_be_hidden()  # every run has epoch/loss

    page.select_option("#metric", "epoch/val_loss")
    expect(page.locator("#missing")).to_have_text("run b and run c have no val_loss (epoch) points yet.")
    post_logs(api, "b", epoch_records({"val_loss": 1.2}, epochs=1, seq=2000))  # b logs it: drawn and no longer named
    expect(page.locator("#missing")).to_have_text("run c has no val_loss (epoch) points yet.")
    page.wait_for_function("() => document.querySelector('.plot').data.find(t => t.name === 'run b').x.length === 1")


def axis(page) -> tuple[str, str, list[str]]:
    """What the x-axis choice shows, what the chart's axis reads, and the choices offered."""
    page.wait_for_function("() => document.querySelector('.plot .xtitle')")
    return (
        page.locator("#xmode option:checked").inner_text(),
        page.locator(".plot .xtitle").text_content(),
        [o.inner_text() for o in page.locator("#xmode option:not([hidden])").all()],
    )


def test_the_x_axis_choice_says_what_the_axis_shows(page, api):
    for run_id, per_epoch in STEPS_PER_EPOCH.items():
        create_run(api, run_id, name=f"run {run_id}", config={"fit": {"steps": per_epoch, "epochs": 2}})
        post_logs(api, run_id, batch_records(per_epoch, 2) + epoch_records({"loss": 0.5}, epochs=2))
        system = {"seq": 3000, "scope": "system", "step": 0, "wall_time": 1.0, "metrics": {"cpu_percent": 50.0}}
        post_logs(api, run_id, [system])
    page.goto("/compare?runs=a,b")
    page.wait_for_selector(READY)
    assert axis(page) == ("epoch", "epoch", ["epoch", "wall time"])  # an epoch metric's steps are its epochs

    page.select_option("#metric", "batch/loss")
    assert axis(page) == ("step", "step", ["step", "epoch", "wall time"])
    page.select_option("#xmode", "epoch")
    page.wait_for_function("() => document.querySelector('.plot .xtitle').textContent === 'epoch'")
    assert axis(page)[0] == "epoch"

    page.select_option("#metric", "system/cpu_percent")
    assert axis(page) == ("sample", "sample", ["sample", "wall time"])
    page.select_option("#metric", "batch/loss")  # the choice made for batches holds
    assert axis(page)[:2] == ("epoch", "epoch")


def test_the_note_on_running_means_shows_for_batch_metrics_only(page, api):
    create_run(api, "a", name="run a", config={"fit": {"steps": 10}})
    post_logs(api, "a", batch_records(10, 2) + epoch_records({"loss": 0.5}, epochs=2))
    page.goto("/compare?runs=a")
    page.wait_for_selector(READY)
    note = page.get_by_text("running means over the epoch")
    expect(note).to_be_hidden()  # epoch/loss is chosen first
    page.select_option("#metric", "batch/loss")
    expect(note).to_be_visible()
    page.select_option("#metric", "epoch/loss")
    expect(note).to_be_hidden()
