"""Ingest and read speed of the fitwatch server, against DESIGN.md's targets.

Starts `fitwatch serve` as its own process on a fresh database, uploads 1,000,000 records
of 4 metrics (5,000 records a request) through the HTTP API, then reads one 1,000,000-point
series downsampled to 2,000 points many times. With `--postgres URL` it does the same on
PostgreSQL (in a fresh database it drops afterwards); with `--mlflow` it uploads the same
kind of points to a local MLflow server through `log_batch` (1,000 metrics a call) and
prints the ratio. MLflow is a bench-only dependency: `pip install mlflow`. With
`--rules PAIRS` it also runs SQLite PAIRS times with and without rules watching every series it
logs (judged on every point, none firing), alternated, and prints the ratio: what rules
cost at ingest.

    python bench/ingest.py [--records 1000000] [--postgres postgresql+psycopg://...] [--mlflow] [--rules 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson

TARGET_INGEST = 200_000  # points/s, SQLite
TARGET_READ_MS = 100.0  # p50, 1,000,000 points -> 2,000
METRICS = ("loss", "accuracy", "val_loss", "lr")
PER_REQUEST = 5000
# Rules on every series the bench logs, as a team would keep them; none of them fires.
RULES = [
    {"when": {"scope": "batch", "name": "loss", "op": "nan"}, "then": {"type": "stop_training"}},
    {"when": {"scope": "batch", "name": "accuracy", "op": "above", "value": 2.0}, "then": {"type": "checkpoint"}},
    {
        "when": {"scope": "batch", "name": "val_loss", "op": "no_improvement", "patience": 10**6},
        "then": {"type": "set_lr", "args": {"factor": 0.5}},
        "once_per_run": False,
    },
    {
        "project": "default",
        "when": {"scope": "batch", "name": "lr", "op": "below", "value": -1.0},
        "then": {"type": "pause"},
    },
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError("server did not become ready")


@contextmanager
def fitwatch_server(db_url: str):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor_server", "--port", str(port), "--db", db_url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        ready = wait_ready(f"http://127.0.0.1:{port}/healthz", proc)
        yield f"http://127.0.0.1:{port}", ready, proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bodies(n_records: int) -> list[bytes]:
    """Request bodies, serialized before the clock starts: the server is measured."""
    out = []
    for start in range(0, n_records, PER_REQUEST):
        records = [
            {
                "seq": i,
                "scope": "batch",
                "step": i,
                "epoch": i // 1000,
                "wall_time": 1.7e9 + i * 0.001,
                "metrics": {m: ((i * 7919 + k * 104729) % 100003) / 100003.0 for k, m in enumerate(METRICS)},
            }
            for i in range(start, min(start + PER_REQUEST, n_records))
        ]
        out.append(orjson.dumps({"records": records}))
    return out


def measure_fitwatch(db_url: str, payloads: list[bytes], n_records: int, label: str, rules=()) -> dict:
    with fitwatch_server(db_url) as (url, ready_s, pid), httpx.Client(base_url=url, timeout=120) as api:
        api.post("/api/v1/runs", json={"id": "bench"}).raise_for_status()
        for rule in rules:
            api.post("/api/v1/rules", json=rule).raise_for_status()
        start = time.perf_counter()
        for body in payloads:
            r = api.post("/api/v1/runs/bench/logs", content=body, headers={"content-type": "application/json"})
            r.raise_for_status()
        elapsed = time.perf_counter() - start
        points = n_records * len(METRICS)
        times = []
        for _ in range(50):
            t = time.perf_counter()
            r = api.get("/api/v1/runs/bench/series/batch/loss", params={"max_points": 2000})
            times.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
        data = r.json()
        assert data["count"] == n_records and data["downsampled"] == (n_records > 2000), data["count"]
        zoom = []
        for k in range(20):
            lo = (k * n_records // 20) // 2
            t = time.perf_counter()
            api.get(
                "/api/v1/runs/bench/series/batch/loss",
                params={"max_points": 2000, "since_step": lo, "until_step": lo + n_records // 3},
            ).raise_for_status()
            zoom.append((time.perf_counter() - t) * 1000)
        rss = rss_mb(pid)
    result = {
        "points_per_s": points / elapsed,
        "read_p50_ms": statistics.median(times),
        "zoom_p50_ms": statistics.median(zoom),
        "returned": len(data["steps"]),
        "ready_s": ready_s,
        "rss_mb": rss,
    }
    print(
        f"{label:<11} ingest {result['points_per_s']:>10,.0f} points/s ({points:,} points in {elapsed:.1f} s)  "
        f"read {n_records:,}->2,000 p50 {result['read_p50_ms']:.1f} ms ({result['returned']} points)  "
        f"zoomed read p50 {result['zoom_p50_ms']:.1f} ms  ready {ready_s:.2f} s  rss {rss:.0f} MB"
    )
    return result


@contextmanager
def postgres_database(url: str):
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"fitwatch_bench_{uuid.uuid4().hex[:8]}"
    admin = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure_mlflow(workdir: Path, n_points: int) -> float:
    """Points/s into a local MLflow server through its REST `log-batch`, 1,000 metrics a call."""
    exe = shutil.which("mlflow")
    if exe is None:
        raise SystemExit("--mlflow needs MLflow in this environment: pip install mlflow")
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "server",
            "--backend-store-uri",
            f"sqlite:///{workdir / 'mlflow.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--default-artifact-root",
            str(workdir / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/health", proc)
        with httpx.Client(base_url=base, timeout=120) as api:
            exp = api.post("/api/2.0/mlflow/experiments/create", json={"name": "bench"}).json()["experiment_id"]
            run = api.post("/api/2.0/mlflow/runs/create", json={"experiment_id": exp}).json()["run"]["info"]["run_id"]
            metrics = []
            for i in range(n_points // len(METRICS)):
                for k, m in enumerate(METRICS):
                    metrics.append(
                        {
                            "key": m,
                            "value": ((i * 7919 + k * 104729) % 100003) / 100003.0,
                            "timestamp": 1_700_000_000_000 + i,
                            "step": i,
                        }
                    )
            start = time.perf_counter()
            for j in range(0, len(metrics), 1000):
                api.post(
                    "/api/2.0/mlflow/runs/log-batch", json={"run_id": run, "metrics": metrics[j : j + 1000]}
                ).raise_for_status()
            rate = len(metrics) / (time.perf_counter() - start)
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"mlflow      ingest {rate:>10,.0f} points/s ({len(metrics):,} points, log_batch of 1,000)")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--postgres", default=os.environ.get("FITWATCH_TEST_POSTGRES_URL"))
    parser.add_argument("--mlflow", action="store_true")
    parser.add_argument("--mlflow-points", type=int, default=200_000)
    parser.add_argument("--rules", type=int, default=0, metavar="PAIRS", help="also measure SQLite ingest with rules")
    args = parser.parse_args()

    payloads = bodies(args.records)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = measure_fitwatch(f"sqlite:///{tmp}/bench.db", payloads, args.records, "sqlite")
        ratios = []
        for k in range(args.rules):  # alternated with runs without, as the machine drifts
            bare = measure_fitwatch(f"sqlite:///{tmp}/bare{k}.db", payloads, args.records, "no rules")
            ruled = measure_fitwatch(f"sqlite:///{tmp}/ruled{k}.db", payloads, args.records, "+4 rules", RULES)
            ratios.append(ruled["points_per_s"] / bare["points_per_s"])
        if args.postgres:
            with postgres_database(args.postgres) as url:
                measure_fitwatch(url, payloads, args.records, "postgresql")
        mlflow = measure_mlflow(Path(tmp), args.mlflow_points) if args.mlflow else None

    print()
    print(
        f"target: ingest into SQLite >= {TARGET_INGEST:,} points/s: {sqlite['points_per_s']:,.0f} "
        f"({'met' if sqlite['points_per_s'] >= TARGET_INGEST else 'NOT met'})"
    )
    print(
        f"target: 1M-point series to 2,000, p50 <= {TARGET_READ_MS:.0f} ms: {sqlite['read_p50_ms']:.1f} ms "
        f"({'met' if sqlite['read_p50_ms'] <= TARGET_READ_MS else 'NOT met'})"
    )
    print(f"target: server ready <= 2 s, <= 150 MB resident: {sqlite['ready_s']:.2f} s, {sqlite['rss_mb']:.0f} MB")
    if ratios:
        print(
            f"ingest with 4 rules judging every point / without, {len(ratios)} alternated pairs: "
            f"median {statistics.median(ratios):.3f} ({', '.join(f'{r:.3f}' for r in ratios)})"
        )
    if mlflow:
        print(
            f"fitwatch / mlflow ingest, same machine, same run of this script: {sqlite['points_per_s'] / mlflow:.1f}x"
        )


if __name__ == "__main__":
    main()
