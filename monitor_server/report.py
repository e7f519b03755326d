"""A run as one self-contained HTML file: its charts (Plotly.js inlined) and its config.

The file opens from disk with no server and no network, so it can be mailed or archived.
Charts are grouped as on the run page: batch metrics, epoch metrics with their `val_`
twin, the learning rate; evaluation results are a table, one row per `evaluate()`. Every
text from data is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import math
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import Connection

from .schemas import SCOPES, RunPublic, SeriesInfo, encode_float
from .store.export import records
from .store.runs import read_run
from .store.series import list_series, read_series

MAX_POINTS = 2000
NONFINITE = "#d62728"


def _groups(series: list[SeriesInfo]) -> dict[str, list[SeriesInfo]]:
    groups: dict[str, list[SeriesInfo]] = {}
    has_batch_lr = any(s.scope == "batch" and s.name == "lr" for s in series)
    for s in sorted(series, key=lambda s: (SCOPES.index(s.scope), s.name == "lr", s.name)):
        if s.scope == "eval":
            continue  # values, not curves: see _evaluations
        if s.name == "lr":
            if s.scope == "epoch" and has_batch_lr:
                continue
            title = "learning rate"
        elif s.scope == "epoch":
            title = f"{s.name.removeprefix('val_')} (epoch: train and validation)"
        else:
            title = f"{s.name} ({s.scope})"
        groups.setdefault(title, []).append(s)
    return groups


def _evaluations(conn: Connection, run_id: str) -> str:
    """A table of the run's `evaluate()` results: the step each ran at, then each metric."""
    rows = list(records(conn, run_id, "eval"))
    if not rows:
        return ""
    names = sorted({n for r in rows for n in r["metrics"]}, key=lambda n: (n != "loss", n))
    head = "".join(f"<th>{html.escape(n)}</th>" for n in ["step", "epoch", *names])
    body = []
    for r in rows:
        cells = [str(r["step"]), "" if r["epoch"] is None else str(r["epoch"])]
        cells += [_number(r["metrics"].get(n)) for n in names]
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return f'<h2>Evaluation</h2><div class="wide"><table class="evals"><tr>{head}</tr>{"".join(body)}</table></div>'


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if math.isfinite(value) else str(encode_float(value))


def _figure(conn: Connection, run_id: str, title: str, members: list[SeriesInfo]):
    import plotly.graph_objects as go  # only the report needs the Python side of plotly

    fig = go.Figure()
    for s in members:
        _, count, downsampled, pts = read_series(conn, run_id, s.scope, s.name, MAX_POINTS, None, None)
        label = (
            ("validation" if s.name.startswith("val_") else "train")
            if s.scope == "epoch" and s.name != "lr"
            else s.name
        )
        finite = np.isfinite(pts.values)
        fig.add_scatter(
            x=pts.steps,
            y=np.where(finite, pts.values, None),
            name=label,
            mode="lines+markers" if len(pts.steps) <= 60 else "lines",
            line_shape="hv" if s.name == "lr" else "linear",
        )
        if not finite.all():
            bad = np.flatnonzero(~finite)
            # Each mark sits at the last finite value before it.
            before = np.maximum.accumulate(np.where(finite, np.arange(len(finite)), -1))[bad]
            last = np.where(before >= 0, pts.values[np.maximum(before, 0)], 0.0)
            names = ["NaN" if np.isnan(v) else ("+Infinity" if v > 0 else "-Infinity") for v in pts.values[bad]]
            fig.add_scatter(
                x=pts.steps[bad],
                y=last,
                text=names,
                mode="markers",
                name=f"{label}: non-finite",
                marker={
                    "color": NONFINITE,
                    "symbol": "x-thin-open",
                    "size": 12,
                    "line": {"width": 2, "color": NONFINITE},
                },
                hovertemplate="%{text} at step %{x}<extra></extra>",
            )
        if downsampled:
            title += f" (downsampled: {len(pts.steps):,} of {count:,} points)"
    fig.update_layout(
        title={"text": html.escape(title), "font": {"size": 14}},
        height=320,
        margin={"l": 50, "r": 20, "t": 40, "b": 40},
        xaxis_title=_x_title({s.scope for s in members}),
        template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def _x_title(scopes: set[str]) -> str:
    """Batch steps, else system sample numbers, else epochs."""
    return "step" if "batch" in scopes else "sample" if scopes == {"system"} else "epoch"


def render(conn: Connection, run_id: str, stale_after: float) -> str:
    run: RunPublic = read_run(conn, run_id, stale_after)
    charts = []
    for i, (title, members) in enumerate(_groups(list_series(conn, run_id)).items()):
        fig = _figure(conn, run_id, title, members)
        charts.append(
            fig.to_html(full_html=False, include_plotlyjs=i == 0, config={"displaylogo": False, "responsive": True})
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
{body}
{evaluations}
<h2>Config</h2><pre>{e(json.dumps(run.config, indent=2))}</pre>
</body></html>
"""
