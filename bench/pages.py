"""Dashboard speed, against DESIGN.md's targets, in Debian's Chromium (headless).

Starts `fitwatch serve` on a fresh SQLite file, uploads a run of 1,000,000 batch records
(loss and accuracy, so 2,000,000 points) plus its epochs, then:

- opens the run page again and again and times navigation start to every chart drawn
  (target: under 2 s);
- posts single batch records and times each POST to the point being in the chart
  (target: within 1 s).

    python bench/pages.py [--records 1000000] [--screenshot run.png]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).parent))
from ingest import fitwatch_server

TARGET_OPEN_S = 2.0
TARGET_LIVE_S = 1.0
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DRAWN = """n => document.body.dataset.ready === 'true'
    && document.querySelectorAll('.chart .plot .main-svg').length >= n"""


def upload(url: str, run_id: str, n: int) -> None:
    with httpx.Client(base_url=url, timeout=120) as api:
        api.post("/api/v1/runs", json={"id": run_id, "name": f"{n:,} batches", "config": {"fit": {"steps": 1000}}})
        for start in range(0, n, 5000):
            records = [
                {
                    "seq": i,
                    "scope": "batch",
                    "step": i,
                    "epoch": i // 1000,
                    "wall_time": 1.7e9 + i * 0.01,
                    "metrics": {
                        "loss": 2.0 / (1 + i / 50000) + (i % 97) / 500,
                        "accuracy": min(0.99, i / n + (i % 89) / 900),
                    },
                }
                for i in range(start, min(n, start + 5000))
            ]
            api.post(
                f"/api/v1/runs/{run_id}/logs",
                content=orjson.dumps({"records": records}),
                headers={"content-type": "application/json"},
            ).raise_for_status()
        epochs = [
            {
                "seq": n + e,
                "scope": "epoch",
                "step": e,
                "epoch": e,
                "wall_time": 1.7e9 + (e + 1) * 10,
                "metrics": {"loss": 2.0 / (1 + e), "val_loss": 2.2 / (1 + e), "lr": 0.001},
            }
            for e in range(n // 1000)
        ]
        api.post(f"/api/v1/runs/{run_id}/logs", json={"records": epochs}).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--opens", type=int, default=7)
    parser.add_argument("--live", type=int, default=20)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    workdir = Path(tempfile.mkdtemp(prefix="fitwatch-pages-"))
    with fitwatch_server(f"sqlite:///{workdir / 'fitwatch.db'}") as (url, _, _), sync_playwright() as p:
        start = time.perf_counter()
        upload(url, "big", args.records)
        print(
            f"uploaded {args.records:,} batch records ({2 * args.records:,} points) in {time.perf_counter() - start:.1f} s"
        )
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        charts = 4  # loss and accuracy (batch), loss (epoch), learning rate
        opens = []
        for _ in range(args.opens):
            page.goto("about:blank")
            start = time.perf_counter()
            page.goto(f"{url}/runs/big")
            page.wait_for_function(DRAWN, arg=charts, timeout=30000)
            opens.append(time.perf_counter() - start)
        live = []
        with httpx.Client(base_url=url) as api:
            for k in range(args.live):
                step = args.records + k
                record = {
                    "seq": 10 * args.records + k,
                    "scope": "batch",
                    "step": step,
                    "wall_time": time.time(),
                    "metrics": {"loss": 0.5, "accuracy": 0.9},
                }
                start = time.perf_counter()
                api.post("/api/v1/runs/big/logs", json={"records": [record]}).raise_for_status()
                try:
                    page.wait_for_function(
                        "step => [...document.querySelectorAll('.plot')].some(p => p.data && p.data[0].x.at(-1) === step)",
                        arg=step,
                        timeout=5000,
                    )
                except Exception:
                    print(
                        page.evaluate(
                            "() => [...document.querySelectorAll('.plot')].map(p => [p.data[0].x.length, p.data[0].x.at(-1)])"
                        )
                    )
                    raise
                live.append(time.perf_counter() - start)
                time.sleep(0.1)
        if args.screenshot:
            page.screenshot(path=str(args.screenshot), full_page=True)
        browser.close()

    open_p50 = statistics.median(opens)
    live_p50 = statistics.median(live)
    live_max = max(live)
    print(
        f"open run page, {args.records:,}-record run, to {charts} charts drawn: p50 {open_p50:.2f} s, max {max(opens):.2f} s ({args.opens} opens, first {opens[0]:.2f} s)"
    )
    print(f"live point, POST to drawn: p50 {live_p50 * 1000:.0f} ms, max {live_max * 1000:.0f} ms ({args.live} points)")
    print(
        f"\ntarget: opens to drawn charts < {TARGET_OPEN_S} s: {open_p50:.2f} s ({'met' if open_p50 < TARGET_OPEN_S else 'NOT met'})"
    )
    print(
        f"target: live point drawn <= {TARGET_LIVE_S} s after its POST: max {live_max:.2f} s ({'met' if live_max <= TARGET_LIVE_S else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
