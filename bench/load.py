"""Load: many trainings logging at once while a dashboard reads, against DESIGN.md's target.

Starts `fitwatch serve` (SQLite, or PostgreSQL with `--postgres URL`) and runs `--runs`
simulated trainings (default 100) for `--seconds` (default 60). Each is a MonitorClient,
the real client with its sender and poller threads, logging `--rate` batches a second
(default 50) with loss and accuracy. One thread plays all the training loops, a step of
every run each tick: a thread a training, sleeping and waking fifty times a second each,
cost this process more than a core, which the server on the same machine then lacked. A
reader plays the dashboard: it reads the run list and one run's loss series in a loop. At
the end it checks every run: each batch stored exactly once. It prints errors, lost and duplicated points, and the p50/p99 latency of log requests
(from the server's answers to the clients' sender threads) and of dashboard reads, against
DESIGN.md's target: zero errors, lost or duplicated, and log request p99 <= 500 ms.

With `--workers N` the PostgreSQL server runs N processes (the compose file runs 2);
`--postgres-only` skips SQLite.

    python bench/load.py [--runs 100] [--rate 50] [--seconds 60] [--postgres URL]
        [--workers 1] [--postgres-only]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
import warnings
from contextlib import ExitStack
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from ingest import fitwatch_server, postgres_database

from client_callbacks import (
    MonitorClient,
    transport,
)

P99_TARGET_MS = 500
LATENCIES: list[float] = []
FAILURES: list[str] = []


def timed_request(original):
    """Wrap the client's request function to record how long each log request takes."""

    def request(http, method, path, body=None, **kwargs):
        start = time.perf_counter()
        try:
            return original(http, method, path, body, **kwargs)
        except Exception as exc:
            FAILURES.append(f"{method} {path}: {exc}")
            raise
        finally:
            if path.endswith("/logs"):
                LATENCIES.append(time.perf_counter() - start)

    return request


def trainings(url: str, ids: list[str], rate: float, seconds: float, spool: Path) -> int:
    """Log a batch to each run `rate` times a second for `seconds`; the batches logged a run."""
    with ExitStack() as stack:
        clients = [
            stack.enter_context(MonitorClient(url=url, run_id=i, project="load", spool_dir=spool, poll_interval=1.0))
            for i in ids
        ]
        start = time.monotonic()
        step = 0
        while time.monotonic() - start < seconds:
            metrics = {"loss": 1.0 / (step + 1), "accuracy": step / 1e6}
            for client in clients:
                client.log("batch", step, metrics)
            step += 1
            time.sleep(max(0.0, start + step / rate - time.monotonic()))
    return step


def dashboard(url: str, run_id: str, stop: threading.Event, latencies: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=30) as api:
        while not stop.is_set():
            start = time.perf_counter()
            api.get("/api/v1/runs", params={"limit": 200}).raise_for_status()
            series = api.get(f"/api/v1/runs/{run_id}/series/batch/loss", params={"max_points": 2000})
            if series.status_code != 404:  # 404 until the run's first batch is in
                series.raise_for_status()
                latencies.append(time.perf_counter() - start)
            time.sleep(0.2)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 1 else float("nan")


def run(db_url: str, label: str, args: argparse.Namespace) -> bool:
    LATENCIES.clear()
    FAILURES.clear()
    spool = Path(tempfile.mkdtemp(prefix="fitwatch-load-spool-"))
    workers = args.workers if label == "postgresql" else 1
    if workers > 1:
        label += f" x{workers}"
    with fitwatch_server(db_url, workers) as (url, _, _):
        ids = [f"load-{uuid.uuid4().hex[:8]}" for _ in range(args.runs)]
        reads: list[float] = []
        stop = threading.Event()
        reader = threading.Thread(target=dashboard, args=(url, ids[0], stop, reads))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            reader.start()
            steps = trainings(url, ids, args.rate, args.seconds, spool)
            stop.set()
            reader.join()
        counts = dict.fromkeys(ids, steps)
        lost = duplicated = 0
        with httpx.Client(base_url=url, timeout=60) as api:
            for run_id in ids:
                steps = []
                for line in api.get(f"/api/v1/runs/{run_id}/export.jsonl").text.splitlines():
                    record = json.loads(line)
                    if record["scope"] == "batch":
                        steps.append(record["step"])
                lost += len(set(range(counts[run_id])) - set(steps))
                duplicated += len(steps) - len(set(steps))
    sent = sum(counts.values())
    leftovers = list(spool.glob("*.jsonl"))
    errors = len(FAILURES) + len(caught)
    print(
        f"{label:11s} {args.runs} runs x {args.rate:g} batches/s x {args.seconds:g} s: {sent:,} batches "
        f"({2 * sent:,} points); errors {errors}, lost {lost}, duplicated {duplicated}, spooled files {len(leftovers)}; "
        f"log request p50 {pct(LATENCIES, 50):.1f} ms p99 {pct(LATENCIES, 99):.1f} ms ({len(LATENCIES):,} requests); "
        f"dashboard read p50 {pct(reads, 50):.1f} ms p99 {pct(reads, 99):.1f} ms"
    )
    for message in (FAILURES + [str(w.message) for w in caught])[:5]:
        print(f"  {message}")
    return errors == 0 and lost == 0 and duplicated == 0 and not leftovers and pct(LATENCIES, 99) <= P99_TARGET_MS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--postgres", help="also run on PostgreSQL (a fresh database on this server)")
    parser.add_argument("--workers", type=int, default=1, help="server processes on PostgreSQL")
    parser.add_argument("--postgres-only", action="store_true", help="skip SQLite")
    args = parser.parse_args()
    transport.request = timed_request(transport.request)

    ok = args.postgres_only or run(f"sqlite:///{tempfile.mkdtemp(prefix='fitwatch-load-')}/fitwatch.db", "sqlite", args)
    if args.postgres:
        with postgres_database(args.postgres) as url:
            ok = run(url, "postgresql", args) and ok
    print(
        f"\ntarget: zero errors, zero lost or duplicated points, log request p99 <= {P99_TARGET_MS:g} ms: "
        f"{'met' if ok else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
