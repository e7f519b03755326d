"""Ingest and read speed of the fitwatch server, against DESIGN.md's targets.

First it measures the raw limit: plain `sqlite3.executemany` of `--raw-rows` rows (default
1,000,000) into an indexed WAL table, 20,000 rows (one request's worth) a transaction; it
measures it again after SQLite's ingest and keeps the faster. Then it
starts `fitwatch serve` as its own process on a fresh database, uploads 1,000,000 records of
4 metrics (5,000 records a request) through the HTTP API with one client, then reads one
1,000,000-point series downsampled to 2,000 points many times; on another fresh database
`--clients` clients (default 8, each its own run) upload the same total at once. Both ingest
figures are judged as a ratio to the raw one (target >= 0.6). The stall figure: while one post
creates 10,000 new series (a run's default limit), another run posts 10 records at a time in a
loop; the longest of those posts is judged against 1 s. With `--postgres URL` it does the same
on PostgreSQL (in fresh databases it drops afterwards) and judges its ingest against SQLite's.
With `--mlflow` it uploads the same kind of points to a local MLflow server through
`log_batch` (1,000 metrics a call) and prints the ratio. MLflow is a bench-only dependency:
`pip install mlflow`. With `--rules PAIRS` it also runs SQLite PAIRS times with and without
rules watching every series it logs (judged on every point, none firing), alternated, and
prints the ratio: what rules cost at ingest. PostgreSQL's ingest is judged on `--rounds`
(default 3) more pairs of ingests, SQLite then PostgreSQL, alternated as the machine drifts
(it does over the minutes between the two databases' blocks): the median of their ratios.

    python bench/ingest.py [--records 1000000] [--raw-rows 1000000] [--clients 8]
        [--postgres postgresql+psycopg://...] [--rounds 3] [--mlflow] [--rules 3]
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson

TARGET_RAW_RATIO = 0.6  # SQLite ingest over HTTP / raw sqlite3 executemany, same machine, same run
TARGET_POSTGRES_RATIO = 1.0  # PostgreSQL ingest / SQLite ingest
TARGET_READ_MS = 100.0  # p50, 1,000,000 points -> 2,000
TARGET_STALL_S = 1.0  # longest small log post while another post creates 10,000 series
METRICS = ("loss", "accuracy", "val_loss", "lr")
PER_REQUEST = 5000
RAW_PER_TRANSACTION = PER_REQUEST * len(METRICS)  # the rows of one fitwatch request
NEW_SERIES = 10_000  # FITWATCH_MAX_SERIES_PER_RUN's default
JSON = {"content-type": "application/json"}
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
def fitwatch_server(db_url: str, workers: int = 1):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor_server", "--port", str(port), "--db", db_url, "--workers", str(workers)],
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


def value(i: int, k: int) -> float:
    """The i-th point of the k-th metric: spread over [0, 1), the same in every measurement."""
    return ((i * 7919 + k * 104729) % 100003) / 100003.0


def record(i: int) -> dict:
    return {
        "seq": i,
        "scope": "batch",
        "step": i,
        "epoch": i // 1000,
        "wall_time": 1.7e9 + i * 0.001,
        "metrics": {m: value(i, k) for k, m in enumerate(METRICS)},
    }


def bodies(n_records: int) -> list[bytes]:
    """Request bodies, serialized before the clock starts: the server is measured."""
    return [
        orjson.dumps({"records": [record(i) for i in range(start, min(start + PER_REQUEST, n_records))]})
        for start in range(0, n_records, PER_REQUEST)
    ]


def measure_raw(path: Path, n_rows: int) -> float:
    """Rows/s of plain `sqlite3.executemany` into an indexed WAL table: the limit fitwatch is held to.

    The rows are the bench's records' points (4 series interleaved), committed 20,000 rows a
    transaction, as one fitwatch request of 5,000 records would be.
    """
    rows = [
        (k + 1, i, i, 1.7e9 + i * 0.001, value(i, k))
        for i in range(n_rows // len(METRICS))
        for k in range(len(METRICS))
    ]
    transactions = [rows[j : j + RAW_PER_TRANSACTION] for j in range(0, len(rows), RAW_PER_TRANSACTION)]
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE points (series_id INTEGER, step INTEGER, seq INTEGER, wall REAL, value REAL, "
            "PRIMARY KEY (series_id, step, seq)) WITHOUT ROWID"
        )
        start = time.perf_counter()
        for transaction in transactions:
            conn.executemany("INSERT INTO points VALUES (?, ?, ?, ?, ?)", transaction)
            conn.commit()
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    rate = len(rows) / elapsed
    print(
        f"{'raw sqlite3':<11} insert {rate:>10,.0f} rows/s   ({len(rows):,} rows in {elapsed:.1f} s, "
        f"executemany, {RAW_PER_TRANSACTION:,} rows a transaction)"
    )
    return rate


def measure_fitwatch(db_url: str, payloads: list[bytes], n_records: int, label: str, rules=()) -> dict:
    with fitwatch_server(db_url) as (url, ready_s, pid), httpx.Client(base_url=url, timeout=120) as api:
        api.post("/api/v1/runs", json={"id": "bench"}).raise_for_status()
        for rule in rules:
            api.post("/api/v1/rules", json=rule).raise_for_status()
        start = time.perf_counter()
        for body in payloads:
            api.post("/api/v1/runs/bench/logs", content=body, headers=JSON).raise_for_status()
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
        f"{label:<11} ingest {result['points_per_s']:>10,.0f} points/s ({points:,} points in {elapsed:.1f} s, "
        f"1 client)  "
        f"read {n_records:,}->2,000 p50 {result['read_p50_ms']:.1f} ms ({result['returned']} points)  "
        f"zoomed read p50 {result['zoom_p50_ms']:.1f} ms  ready {ready_s:.2f} s  rss {rss:.0f} MB"
    )
    return result


def post_logs(url: str, run_id: str, payloads: list[bytes], start_together: threading.Barrier) -> None:
    """One client of `measure_clients`: its own connection, its own run."""
    with httpx.Client(base_url=url, timeout=120) as api:
        start_together.wait()
        for body in payloads:
            api.post(f"/api/v1/runs/{run_id}/logs", content=body, headers=JSON).raise_for_status()


def measure_clients(db_url: str, n_records: int, clients: int, label: str) -> float:
    """Points/s with `clients` clients posting at once, each its share of `n_records` to its own run."""
    shares = [n_records // clients + (c < n_records % clients) for c in range(clients)]
    payloads = {n: bodies(n) for n in set(shares)}
    with fitwatch_server(db_url) as (url, _, _), httpx.Client(base_url=url, timeout=120) as api:
        for c in range(clients):
            api.post("/api/v1/runs", json={"id": f"bench-{c}"}).raise_for_status()
        start_together = threading.Barrier(clients + 1, timeout=60)
        with ThreadPoolExecutor(clients) as pool:
            posting = [
                pool.submit(post_logs, url, f"bench-{c}", payloads[n], start_together) for c, n in enumerate(shares)
            ]
            start_together.wait()
            start = time.perf_counter()
            for done in posting:
                done.result()
            elapsed = time.perf_counter() - start
        for c, n in enumerate(shares):
            stored = {series["name"]: series["count"] for series in api.get(f"/api/v1/runs/bench-{c}/series").json()}
            assert stored == dict.fromkeys(METRICS, n), (f"bench-{c}", stored)
    points = n_records * len(METRICS)
    rate = points / elapsed
    print(
        f"{label:<11} ingest {rate:>10,.0f} points/s ({points:,} points in {elapsed:.1f} s, {clients} client{'s' * (clients > 1)})"
    )
    return rate


def new_series_body() -> bytes:
    """One request of 5,000 records naming 2 new metrics each: 10,000 new series, a run's default limit."""
    per_record = NEW_SERIES // PER_REQUEST
    records = [
        {
            "seq": i,
            "scope": "batch",
            "step": i,
            "wall_time": 1.7e9 + i * 0.001,
            "metrics": {f"m{i * per_record + k}": value(i, k) for k in range(per_record)},
        }
        for i in range(PER_REQUEST)
    ]
    return orjson.dumps({"records": records})


def measure_stall(db_url: str, label: str) -> float:
    """The longest small log post (10 records) to one run while another run's post creates 10,000 series."""
    wide_body = new_series_body()
    with fitwatch_server(db_url) as (url, _, _), httpx.Client(base_url=url, timeout=120) as api:
        for run_id in ("wide", "small"):
            api.post("/api/v1/runs", json={"id": run_id}).raise_for_status()

        def post_small(first: int) -> float:
            body = orjson.dumps({"records": [record(i) for i in range(first, first + 10)]})
            start = time.perf_counter()
            api.post("/api/v1/runs/small/logs", content=body, headers=JSON).raise_for_status()
            return time.perf_counter() - start

        def post_wide() -> float:
            with httpx.Client(base_url=url, timeout=120) as wide:
                start = time.perf_counter()
                r = wide.post("/api/v1/runs/wide/logs", content=wide_body, headers=JSON)
                r.raise_for_status()
                assert r.json()["accepted"] == PER_REQUEST, r.json()
                return time.perf_counter() - start

        post_small(0)  # the small run's series exist before the wide post starts
        latencies = []
        with ThreadPoolExecutor(1) as pool:
            wide = pool.submit(post_wide)
            while True:
                latencies.append(post_small(10 * (len(latencies) + 1)))
                if wide.done():
                    break
            wide_s = wide.result()
    longest = max(latencies)
    print(
        f"{label:<11} stall  longest post of 10 records {longest * 1000:.0f} ms, of {len(latencies)} posted while "
        f"one post created {NEW_SERIES:,} series in {wide_s:.1f} s"
    )
    return longest


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


def measure_database(fresh_db, label: str, payloads: list[bytes], n_records: int, clients: int) -> dict:
    """One client's ingest and reads, `clients` clients' ingest, the stall: each on a fresh database.

    `fresh_db(name)` is a context manager that yields a new database's URL.
    """
    with fresh_db("bench") as url:
        result = measure_fitwatch(url, payloads, n_records, label)
    result["clients_per_s"] = None
    if clients > 1:
        with fresh_db("clients") as url:
            result["clients_per_s"] = measure_clients(url, n_records, clients, label)
    with fresh_db("stall") as url:
        result["stall_s"] = measure_stall(url, label)
    return result


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def alternated(fresh_postgres, n_records: int, clients: int, rounds: int) -> dict[int, list[float]]:
    """PostgreSQL / SQLite ingest, per number of clients: `rounds` pairs run back to back."""
    ratios: dict[int, list[float]] = {1: [], clients: []}
    with tempfile.TemporaryDirectory() as tmp:
        for k, n in itertools.product(range(rounds), ratios):
            sqlite = measure_clients(f"sqlite:///{tmp}/round{k}-{n}.db", n_records, n, "sqlite")
            with fresh_postgres() as url:
                ratios[n].append(measure_clients(url, n_records, n, "postgresql") / sqlite)
    return ratios


def print_targets(
    raw: float, n_records: int, clients: int, results: dict[str, dict], rounds: dict[int, list[float]]
) -> None:
    """DESIGN.md's targets, each judged on figures of this run."""
    sqlite = results["sqlite"]
    ingest = [("1 client", "points_per_s"), (f"{clients} clients", "clients_per_s")]
    print(
        f"target: ingest into SQLite >= {TARGET_RAW_RATIO} x raw sqlite3 executemany "
        f"({raw:,.0f} rows/s, so >= {TARGET_RAW_RATIO * raw:,.0f} points/s):"
    )
    for name, key in ingest:
        if sqlite[key] is not None:
            ratio = sqlite[key] / raw
            print(
                f"  {name:<11} {sqlite[key]:>10,.0f} points/s = {ratio:.2f} x raw   {verdict(ratio >= TARGET_RAW_RATIO)}"
            )
    if rounds:
        print(f"target: ingest into PostgreSQL >= {TARGET_POSTGRES_RATIO} x SQLite, same clients (alternated pairs):")
        for n, ratios in rounds.items():
            median = statistics.median(ratios)
            print(
                f"  {f'{n} client' + 's' * (n > 1):<11} median {median:.2f} x SQLite "
                f"({', '.join(f'{r:.2f}' for r in ratios)})   {verdict(median >= TARGET_POSTGRES_RATIO)}"
            )
    print(f"target: one {n_records:,}-point series to 2,000, p50 <= {TARGET_READ_MS:.0f} ms:")
    for label, result in results.items():
        print(
            f"  {label:<11} read {result['read_p50_ms']:.1f} ms {verdict(result['read_p50_ms'] <= TARGET_READ_MS)}, "
            f"zoomed read {result['zoom_p50_ms']:.1f} ms {verdict(result['zoom_p50_ms'] <= TARGET_READ_MS)}"
        )
    print(f"target: a post creating {NEW_SERIES:,} series stalls no other run's log post past {TARGET_STALL_S:.0f} s:")
    for label, result in results.items():
        print(f"  {label:<11} longest {result['stall_s']:.3f} s   {verdict(result['stall_s'] <= TARGET_STALL_S)}")
    ok = sqlite["ready_s"] <= 2 and sqlite["rss_mb"] <= 150
    print(
        f"target: server ready <= 2 s, <= 150 MB resident: {sqlite['ready_s']:.2f} s, {sqlite['rss_mb']:.0f} MB   "
        f"{verdict(ok)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--raw-rows", type=int, default=1_000_000, help="rows of the raw sqlite3 measurement")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients of the second ingest (1: none)")
    parser.add_argument("--postgres", default=os.environ.get("FITWATCH_TEST_POSTGRES_URL"))
    parser.add_argument("--rounds", type=int, default=3, help="alternated SQLite/PostgreSQL ingest pairs")
    parser.add_argument("--mlflow", action="store_true")
    parser.add_argument("--mlflow-points", type=int, default=200_000)
    parser.add_argument("--rules", type=int, default=0, metavar="PAIRS", help="also measure SQLite ingest with rules")
    args = parser.parse_args()

    payloads = bodies(args.records)
    with tempfile.TemporaryDirectory() as tmp:

        @contextmanager
        def sqlite_database(name: str):
            yield f"sqlite:///{tmp}/{name}.db"

        # Right before and after fitwatch's, on the same disk; the faster one is the limit,
        # as this machine's speed drifts.
        raw = measure_raw(Path(tmp) / "raw.db", args.raw_rows)
        results = {"sqlite": measure_database(sqlite_database, "sqlite", payloads, args.records, args.clients)}
        raw = max(raw, measure_raw(Path(tmp) / "raw2.db", args.raw_rows))
        ratios = []
        for k in range(args.rules):  # alternated with runs without, as the machine drifts
            bare = measure_fitwatch(f"sqlite:///{tmp}/bare{k}.db", payloads, args.records, "no rules")
            ruled = measure_fitwatch(f"sqlite:///{tmp}/ruled{k}.db", payloads, args.records, "+4 rules", RULES)
            ratios.append(ruled["points_per_s"] / bare["points_per_s"])
        if args.postgres:
            results["postgresql"] = measure_database(
                lambda name: postgres_database(args.postgres), "postgresql", payloads, args.records, args.clients
            )
        rounds = {}
        if args.postgres and args.rounds:
            rounds = alternated(lambda: postgres_database(args.postgres), args.records, args.clients, args.rounds)
        mlflow = measure_mlflow(Path(tmp), args.mlflow_points) if args.mlflow else None

    print()
    print_targets(raw, args.records, args.clients, results, rounds)
    sqlite = results["sqlite"]
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
