"""What one GET of a run's report costs: time, size and charts, for a run of many series.

Starts `fitwatch serve` on a fresh SQLite file (or `--postgres URL`, in a fresh database it
drops afterwards), uploads a run of `--series` series (default 10,000, a run's series
limit: what a per-sample logging bug makes): the epoch loss, val_loss and lr, and batch
series of `--points` points each for the rest, then times `GET /runs/{id}/report.html` `--repeat` times and prints the
median time, the size and how many charts the report draws.

    python bench/report.py [--series 10000] [--points 100] [--repeat 3] [--postgres URL]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).parent))
from ingest import fitwatch_server, postgres_database

JSON = {"content-type": "application/json"}
RUN = "wide"
STEPS_A_POST = 20  # with 10,000 series, about 3 MB a post
PER_RECORD = 1000  # metrics a record may hold
EPOCH_METRICS = ("loss", "val_loss", "lr")


def upload(url: str, series: int, points: int) -> None:
    names = [f"sample_{k}_loss" for k in range(series - len(EPOCH_METRICS))]
    groups = [names[k : k + PER_RECORD] for k in range(0, series, PER_RECORD)]
    with httpx.Client(base_url=url, timeout=600) as api:
        api.post("/api/v1/runs", json={"id": RUN, "name": f"{series:,} series"}).raise_for_status()
        for start in range(0, points, STEPS_A_POST):
            records = [
                {
                    "seq": i * len(groups) + g,
                    "scope": "batch",
                    "step": i,
                    "epoch": 0,
                    "wall_time": 1.7e9 + i,
                    "metrics": {name: ((i * 7919 + k * 104729) % 1009) / 1009 for k, name in enumerate(group)},
                }
                for i in range(start, min(points, start + STEPS_A_POST))
                for g, group in enumerate(groups)
            ]
            response = api.post(f"/api/v1/runs/{RUN}/logs", content=orjson.dumps({"records": records}), headers=JSON)
            assert response.status_code == 200, response.text
        epochs = [
            {
                "seq": points * len(groups) + e,
                "scope": "epoch",
                "step": e,
                "epoch": e,
                "wall_time": 1.7e9 + points + e,
                "metrics": dict(zip(EPOCH_METRICS, (1 / (1 + e), 1.1 / (1 + e), 0.001))),
            }
            for e in range(10)
        ]
        api.post(f"/api/v1/runs/{RUN}/logs", json={"records": epochs}).raise_for_status()
        stored = api.get(f"/api/v1/runs/{RUN}/series").json()
        assert len(stored) == series, len(stored)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", help="a PostgreSQL URL (postgresql+psycopg://...) instead of SQLite")
    args = parser.parse_args()
    with ExitStack() as stack:
        if args.postgres:
            db = stack.enter_context(postgres_database(args.postgres))
        else:
            db = f"sqlite:///{stack.enter_context(tempfile.TemporaryDirectory())}/report.db"
        url, _, _ = stack.enter_context(fitwatch_server(db))
        start = time.perf_counter()
        upload(url, args.series, args.points)
        print(f"uploaded {args.series:,} series of {args.points} points in {time.perf_counter() - start:.1f} s")
        times, size, charts = [], 0, 0
        with httpx.Client(base_url=url, timeout=3600) as api:
            for _ in range(args.repeat):
                start = time.perf_counter()
                response = api.get(f"/runs/{RUN}/report.html")
                times.append(time.perf_counter() - start)
                response.raise_for_status()
                size, charts = len(response.content), response.text.count("Plotly.newPlot(")
        print(
            f"report.html, {'PostgreSQL' if args.postgres else 'SQLite'}: {statistics.median(times):.2f} s "
            f"(median of {args.repeat}), {size / 1e6:.1f} MB, {charts} charts"
        )


if __name__ == "__main__":
    main()
