"""The run list at a team's scale: `GET /api/v1/runs` with 10,000 runs in the database.

Starts `fitwatch serve` on a fresh SQLite file (and, with `--postgres URL`, on a fresh
PostgreSQL database), creates `--runs` runs through the API (a tenth of them tagged, each
with a `val_loss` epoch value, in 20 projects), then times the list as the page asks for
it: the first page of 50, a page deep in the list, a name search, a tag filter, a project
and status filter, a sort by the metric's last value, and the projects the page reads
beside every page (`GET /api/v1/projects`). Each query's p50 over
`--repeats` calls is judged against the target, as is the slowest of them.

    python bench/runs_list.py [--runs 10000] [--repeats 50] [--postgres postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from ingest import fitwatch_server, postgres_database

TARGET_P50_MS = 100.0  # one page of the list, whatever the query, with 10,000 runs stored
PAGE = 50
CLIENTS = 8


def fill(url: str, n: int) -> None:
    """`n` runs through the API, each with one epoch of val_loss; every tenth tagged."""

    def make(worker: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as api:
            for i in range(worker, n, CLIENTS):
                run_id = f"run-{i:05d}"
                api.post(
                    "/api/v1/runs", json={"id": run_id, "name": f"model {i % 97} seed {i}", "project": f"p{i % 20}"}
                ).raise_for_status()
                record = {"seq": 0, "scope": "epoch", "step": 0, "epoch": 0, "wall_time": time.time()}
                record["metrics"] = {"val_loss": ((i * 7919) % 10007) / 10007}
                api.post(f"/api/v1/runs/{run_id}/logs", json={"records": [record]}).raise_for_status()
                if i % 10 == 0:
                    api.patch(f"/api/v1/runs/{run_id}", json={"tags": ["sweep", f"t{i % 7}"]}).raise_for_status()

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(make, range(CLIENTS)))


QUERIES = {
    "first page": {},
    "page 100": {"offset": 100 * PAGE},
    "search": {"q": "SEED 12"},
    "tag": {"tag": "sweep"},
    "project+status": {"project": "p3", "status": "running"},
    "sort by metric": {"sort": "metric:val_loss", "order": "asc"},
}


def measure(label: str, db_url: str, n_runs: int, repeats: int) -> dict[str, float]:
    with fitwatch_server(db_url) as (url, _ready, _pid), httpx.Client(base_url=url, timeout=60) as api:
        start = time.perf_counter()
        fill(url, n_runs)
        print(f"{label:<11} {n_runs:,} runs made in {time.perf_counter() - start:.0f} s")
        out = {}
        for name, params in QUERIES.items():
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                response = api.get("/api/v1/runs", params={"limit": PAGE, **params})
                times.append((time.perf_counter() - t) * 1000)
                response.raise_for_status()
            total = int(response.headers["X-Total-Count"])
            assert response.json() and total > 0, name
            out[name] = statistics.median(times)
            print(f"{label:<11} {name:<15} p50 {out[name]:6.1f} ms  ({total:,} match, {len(response.json())} shown)")
        times = []  # the page reads the projects with every page, for its project filter
        for _ in range(repeats):
            t = time.perf_counter()
            response = api.get("/api/v1/projects")
            times.append((time.perf_counter() - t) * 1000)
            response.raise_for_status()
        out["projects"] = statistics.median(times)
        print(f"{label:<11} {'projects':<15} p50 {out['projects']:6.1f} ms  ({len(response.json())} projects)")
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--postgres", default=os.environ.get("FITWATCH_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = measure("sqlite", f"sqlite:///{Path(tmp) / 'runs.db'}", args.runs, args.repeats)
    if args.postgres:
        with postgres_database(args.postgres) as url:
            results["postgresql"] = measure("postgresql", url, args.runs, args.repeats)
    print(f"\ntarget: a page of {PAGE} runs of {args.runs:,}, p50 <= {TARGET_P50_MS:.0f} ms, every query:")
    for label, figures in results.items():
        worst = max(figures, key=figures.get)
        verdict = "PASS" if figures[worst] <= TARGET_P50_MS else "FAIL"
        print(f"  {label:<11} slowest: {worst} {figures[worst]:.1f} ms   {verdict}")


if __name__ == "__main__":
    main()
