"""A run as one self-contained HTML file: its charts (Plotly.js inlined) and its config.

The file opens from disk with no server and no network, so it can be mailed or archived.
Charts are grouped as on the run page: batch metrics, epoch metrics with their `val_`
twin, the learning rate; evaluation results are a table, one row per `evaluate()`. Every
text from data is HTML-escaped.

Any reader may ask for it, so what it costs is bounded, not the run's size: at most
`MAX_CHARTS` charts of at most `MAX_POINTS` points a series, and an evaluation table of
at most `MAX_EVAL_COLUMNS` metrics and the last `MAX_EVAL_ROWS` evaluations. A note says
what was left out and where every point is: the exports.
"""

from __future__ import annotations

import html
import json
import math
from collections import deque
from datetime import UTC, datetime
from functools import cache
from typing import Any

import numpy as np
from sqlalchemy import Connection

from ..domain.schemas import SCOPES, RunPublic, SeriesInfo, encode_float
from ..store.export import records
from ..store.runs import read_run
from ..store.series import list_series, read_series

MAX_POINTS = 2000  # a series' points in its chart: downsampled past that, extremes kept
MAX_CHARTS = 40  # a series or two each: under 10 MB, Plotly.js's 4.8 MB included
MAX_EVAL_COLUMNS = 30
MAX_EVAL_ROWS = 200
NAMED = 20  # charts left out that the note names
NONFINITE = "#d62728"
SECTIONS = ("batch", "epoch", "learning rate", "system")  # as on the run page


def _is_lr(name: str) -> bool:
    """A learning rate: `lr`, or `lr.NAME` of each of a model's several optimizers."""
    return name == "lr" or name.startswith("lr.")


def _groups(series: list[SeriesInfo]) -> dict[str, list[SeriesInfo]]:
    groups: dict[str, list[SeriesInfo]] = {}
    batch_lr = {s.name for s in series if s.scope == "batch" and _is_lr(s.name)}
    for s in sorted(series, key=lambda s: (SCOPES.index(s.scope), _is_lr(s.name), s.name)):
        if s.scope == "eval":
            continue  # values, not curves: see _evaluations
        if _is_lr(s.name):
            if s.scope == "epoch" and s.name in batch_lr:
                continue
            title = "learning rate"
        elif s.scope == "epoch":
            title = f"{s.name.removeprefix('val_')} (epoch: train and validation)"
        else:
            title = f"{s.name} ({s.scope})"
        groups.setdefault(title, []).append(s)
    return groups


def _section(title: str, members: list[SeriesInfo]) -> str:
    return "learning rate" if title == "learning rate" else members[0].scope


def _pick(groups: dict[str, list[SeriesInfo]]) -> tuple[dict[str, list[SeriesInfo]], list[str]]:
    """At most `MAX_CHARTS` charts, taken from each section in turn, each section's first:
    a run with thousands of batch series still shows its epoch curves. The charts kept, in
    their order, and the titles of those left out."""
    queues: dict[str, deque[str]] = {section: deque() for section in SECTIONS}
    for title, members in groups.items():
        queues.setdefault(_section(title, members), deque()).append(title)
    kept: set[str] = set()
    while len(kept) < MAX_CHARTS and any(queues.values()):
        for queue in queues.values():
            if queue and len(kept) < MAX_CHARTS:
                kept.add(queue.popleft())
    return {t: m for t, m in groups.items() if t in kept}, [t for t in groups if t not in kept]


def _left_out(run_id: str, total: int, titles: list[str]) -> str:
    """The note on the charts left out: how many, the first few by name, and the exports."""
    if not titles:
        return ""
    e = html.escape
    named = ", ".join(titles[:NAMED]) + (f", and {len(titles) - NAMED:,} more" if len(titles) > NAMED else "")
    api = f"/api/v1/runs/{run_id}"
    return (
        f'<p class="note" id="left-out">This report draws {total - len(titles):,} of the run\'s {total:,} charts '
        f"(the first of each section: batch, epoch, learning rate, system). Left out: {len(titles):,} charts: {e(named)}. "
        f"Every point of every series is in the run's exports: <code>{e(api)}/export.csv?scope=batch</code> "
        f"(one scope, Keras' CSVLogger layout), <code>{e(api)}/export.jsonl</code> (every record), or "
        f"<code>fitwatch export {e(run_id)}</code>.</p>"
    )


def _evaluations(conn: Connection, run_id: str) -> str:
    """A table of the run's `evaluate()` results: the step each ran at, then each metric;
    the first `MAX_EVAL_COLUMNS` metrics (loss first) of the last `MAX_EVAL_ROWS` evaluations."""
    shown: deque[dict[str, Any]] = deque(maxlen=MAX_EVAL_ROWS)  # memory stays bounded, however many
    metrics: set[str] = set()
    total = 0
    for r in records(conn, run_id, "eval"):
        shown.append(r)
        metrics.update(r["metrics"])
        total += 1
    if not total:
        return ""
    every = sorted(metrics, key=lambda n: (n != "loss", n))
    names = every[:MAX_EVAL_COLUMNS]
    head = "".join(f"<th>{html.escape(n)}</th>" for n in ["step", "epoch", *names])
    body = []
    for r in shown:
        cells = [str(r["step"]), "" if r["epoch"] is None else str(r["epoch"])]
        cells += [_number(r["metrics"].get(n)) for n in names]
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    note = ""
    if len(names) < len(every) or len(shown) < total:
        note = (
            f'<p class="note">{len(names):,} of {len(every):,} metrics, the last {len(shown):,} of {total:,} '
            f"evaluations: every one is in <code>/api/v1/runs/{html.escape(run_id)}/export.csv?scope=eval</code>.</p>"
        )
    table = f'<div class="wide"><table class="evals"><tr>{head}</tr>{"".join(body)}</table></div>'
    return f"<h2>Evaluation</h2>{note}{table}"


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if math.isfinite(value) else str(encode_float(value))


def _figure(conn: Connection, run_id: str, title: str, members: list[SeriesInfo]) -> dict[str, Any]:
    """A chart as Plotly's figure dict. Plain dicts, not `plotly.graph_objects`: validating
    a figure and its template cost 160 ms a chart, more than reading its points."""
    traces = []
    for s in members:
        _, count, downsampled, pts = read_series(conn, run_id, s.scope, s.name, MAX_POINTS, None, None)
        label = (
            ("validation" if s.name.startswith("val_") else "train")
            if s.scope == "epoch" and not _is_lr(s.name)
            else s.name
        )
        finite = np.isfinite(pts.values)
        traces.append(
            {
                "type": "scatter",
                "x": pts.steps,
                "y": np.where(finite, pts.values, None),
                "name": label,
                "mode": "lines+markers" if len(pts.steps) <= 60 else "lines",
                "line": {"shape": "hv" if _is_lr(s.name) else "linear"},
            }
        )
        if not finite.all():
            traces.append(_nonfinite_marks(pts.steps, pts.values, finite, label))
        if downsampled:
            title += f" (downsampled: {len(pts.steps):,} of {count:,} points)"
    layout = {
        "title": {"text": html.escape(title), "font": {"size": 14}},
        "height": 320,
        "margin": {"l": 50, "r": 20, "t": 40, "b": 40},
        "xaxis": {"title": {"text": _x_title({s.scope for s in members})}},
        "template": _template(),
        "legend": {"orientation": "h", "y": -0.2},
    }
    return {"data": traces, "layout": layout}


def _nonfinite_marks(steps: np.ndarray, values: np.ndarray, finite: np.ndarray, label: str) -> dict[str, Any]:
    """A red mark at each NaN and ±Infinity, at the height of the last finite value before it."""
    bad = np.flatnonzero(~finite)
    before = np.maximum.accumulate(np.where(finite, np.arange(len(finite)), -1))[bad]
    last = np.where(before >= 0, values[np.maximum(before, 0)], 0.0)
    names = ["NaN" if np.isnan(v) else ("+Infinity" if v > 0 else "-Infinity") for v in values[bad]]
    return {
        "type": "scatter",
        "x": steps[bad],
        "y": last,
        "text": names,
        "mode": "markers",
        "name": f"{label}: non-finite",
        "marker": {"color": NONFINITE, "symbol": "x-thin-open", "size": 12, "line": {"width": 2, "color": NONFINITE}},
        "hovertemplate": "%{text} at step %{x}<extra></extra>",
    }


@cache
def _template() -> dict[str, Any]:
    import plotly.io

    return plotly.io.templates["plotly_white"].to_plotly_json()


def _x_title(scopes: set[str]) -> str:
    """Batch steps, else system sample numbers, else epochs."""
    return "step" if "batch" in scopes else "sample" if scopes == {"system"} else "epoch"


def render(conn: Connection, run_id: str, stale_after: float) -> str:
    import plotly.io  # only the report needs the Python side of plotly

    run: RunPublic = read_run(conn, run_id, stale_after)
    charts = []
    groups = _groups(list_series(conn, run_id))
    drawn, left_out = _pick(groups)
    for i, (title, members) in enumerate(drawn.items()):
        charts.append(
            plotly.io.to_html(
                _figure(conn, run_id, title, members),
                full_html=False,
                include_plotlyjs=i == 0,
                config={"displaylogo": False, "responsive": True},
                validate=False,
            )
        )
    e = html.escape
    rows = [
        ("status", run.status),
        ("reason", run.reason or ""),
        ("project", run.project),
        ("id", run.id),
        ("started", run.created_at.isoformat()),
        ("last change", run.updated_at.isoformat()),
    ]
    latest = ", ".join(f"{k} {v}" for k, v in run.latest.items())
    evaluations = _evaluations(conn, run_id)
    body = "\n".join(charts) if charts or evaluations else "<p>No points were logged.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(run.name)} · fitwatch report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;color:#1f2328}}
h1,td{{overflow-wrap:anywhere}}.wide{{overflow-x:auto}}
table{{border-collapse:collapse}}td{{padding:3px 12px 3px 0;vertical-align:top}}td:first-child{{color:#656d76}}
pre{{background:#f6f8fa;padding:10px;border-radius:6px;overflow:auto}}.note{{color:#656d76;font-size:13px}}
.evals th,.evals td{{padding:3px 14px 3px 0;text-align:left;font-variant-numeric:tabular-nums;white-space:nowrap;overflow-wrap:normal}}</style>
</head><body>
<h1>{e(run.name)}</h1>
<table>{"".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in rows)}
<tr><td>last epoch</td><td>{e(latest)}</td></tr></table>
<p class="note">Batch values are what Keras reports after each batch: running means over the epoch so far.
Report made {e(datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))} by fitwatch.</p>
{_left_out(run_id, len(groups), left_out)}
{body}
{evaluations}
<h2>Config</h2><pre>{e(json.dumps(run.config, indent=2))}</pre>
</body></html>
"""
