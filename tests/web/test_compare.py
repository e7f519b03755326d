"""The compare page by epoch: runs with different steps per epoch line up on the epoch
axis, zoom reads each run's own steps, and run status follows live."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.helpers import create_run, post_logs
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
