"""The run's report: what one GET costs is bounded whatever the run holds (charts, points a
chart, evaluation columns), a note names what was left out and where it is, and it opens
in the browser or downloads as a file."""

from __future__ import annotations

import re

from monitor_server.api.routes.pages import PLOTLY_JS
from monitor_server.services import report
from tests.support.api import create_run, post_logs

SERIES = 2000


def wide_run(api) -> list[str]:
    """A run of 2,000 batch series (as a per-sample logging bug makes), a 5,000-point loss,
    the epoch loss, val_loss and lr, and an evaluation of 40 metrics; its batch charts' titles."""
    create_run(api, "r")
    names = [f"sample_{k}" for k in range(SERIES)]
    wide = [
        {
            "seq": step * 2 + half,
            "scope": "batch",
            "step": step,
            "wall_time": 1.0 + step,
            "metrics": dict.fromkeys(names[half::2], 0.5),
        }
        for step in range(3)
        for half in range(2)
    ]
    loss = [
        {"seq": 100 + i, "scope": "batch", "step": i, "wall_time": 1.0 + i, "metrics": {"loss": 1 / (1 + i)}}
        for i in range(5000)
    ]
    epochs = [
        {
            "seq": 10_000 + e,
            "scope": "epoch",
            "step": e,
            "wall_time": 9e3 + e,
            "metrics": {"loss": 1.0, "val_loss": 2.0, "lr": 0.1},
        }
        for e in range(2)
    ]
    evaluation = {
        "seq": 20_000,
        "scope": "eval",
        "step": 2,
        "wall_time": 1e4,
        "metrics": {f"m{k:02d}": k for k in range(40)},
    }
    for records in (wide, loss, [*epochs, evaluation]):
        assert post_logs(api, "r", records).status_code == 200
    return sorted(f"{name} (batch)" for name in [*names, "loss"])


def test_a_run_of_thousands_of_series_gives_a_bounded_report_that_says_what_it_left_out(api):
    batch = wide_run(api)
    response = api.get("/runs/r/report.html")
    assert response.status_code == 200
    text = response.text
    assert text.count("Plotly.newPlot(") == report.MAX_CHARTS
    assert text.count('"mode":"lines') <= 2 * report.MAX_CHARTS  # a series or two a chart
    assert len(response.content) < PLOTLY_JS.stat().st_size + 1_000_000
    # Each section gets its first charts: the epoch curves and the rate are not crowded out.
    assert "loss (epoch: train and validation)" in text and "learning rate" in text
    drawn = report.MAX_CHARTS - 2
    assert [t for t in batch if f'"text":"{t}' in text] == batch[:drawn]
    assert "loss (batch) (downsampled: " in text and "of 5,000 points)" in text
    [note] = re.findall(r'<p class="note" id="left-out">(.*?)</p>', text, re.S)
    left = len(batch) - drawn
    assert f"draws {report.MAX_CHARTS} of the run's {len(batch) + 2:,} charts" in note
    assert (
        f"Left out: {left:,} charts: {', '.join(batch[drawn : drawn + report.NAMED])}, and {left - report.NAMED:,} more"
        in note
    )
    assert "/api/v1/runs/r/export.csv?scope=batch" in note and "/api/v1/runs/r/export.jsonl" in note
    assert f"{report.MAX_EVAL_COLUMNS} of 40 metrics" in text
    assert text.count("<th>") == 2 + report.MAX_EVAL_COLUMNS  # step, epoch, then the metrics


def test_the_report_opens_in_the_browser_sandboxed_or_downloads_as_a_file(api):
    create_run(api, "r")
    post_logs(api, "r", [{"seq": 0, "scope": "batch", "step": 0, "wall_time": 1.0, "metrics": {"loss": 1.0}}])
    shown = api.get("/runs/r/report.html")
    assert shown.headers["content-disposition"] == "inline"
    assert shown.headers["content-type"].startswith("text/html")
    assert shown.headers["content-security-policy"].startswith("sandbox allow-scripts")
    saved = api.get("/runs/r/report.html", params={"download": 1})
    assert saved.headers["content-disposition"] == 'attachment; filename="r-report.html"'
    assert saved.text.count("Plotly.newPlot(") == shown.text.count("Plotly.newPlot(") == 1
