"""Dashboard speed, against DESIGN.md's targets, in Debian's Chromium (headless).

Starts `fitwatch serve` on a fresh SQLite file, uploads a run of 1,000,000 batch records
(loss and accuracy, so 2,000,000 points) plus its epochs, then:

- opens the run page again and again and times navigation start to every chart drawn
  (target: under 2 s);
- posts single batch records and times each POST to the point being in the chart
  (target: within 1 s).

With `--compare N` it uploads N runs of `--points P` batch points each (configs that
differ in two keys) instead, and times opening the compare page of all N to the chart
drawn (target: under 2 s) and to its sweep view drawn, a live point of one of them to
drawn (target: 1 s; one posted as the chart is drawn, while the sweep view draws, is
printed apart), and a live point in each of 12 run pages open at once.

    python bench/pages.py [--records 1000000] [--screenshot run.png]
    python bench/pages.py --compare 100 --points 10000
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


def post(api: httpx.Client, run_id: str, records: list[dict]) -> None:
    api.post(
        f"/api/v1/runs/{run_id}/logs",
        content=orjson.dumps({"records": records}),
        headers={"content-type": "application/json"},
    ).raise_for_status()


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
            post(api, run_id, records)
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
        post(api, run_id, epochs)


def upload_runs(url: str, n: int, points: int) -> list[str]:
    """`n` runs of `points` batch losses each, lr and batch size varied; their ids."""
    ids = [f"run-{i:04d}" for i in range(n)]
    with httpx.Client(base_url=url, timeout=120) as api:
        for i, run_id in enumerate(ids):
            config = {"lr": [0.1, 0.03, 0.01, 0.003][i % 4], "batch_size": [32, 64, 128][i % 3], "fit": {"steps": 100}}
            api.post("/api/v1/runs", json={"id": run_id, "name": run_id, "project": "bench", "config": config})
            for start in range(0, points, 10_000):
                records = [
                    {
                        "seq": j,
                        "scope": "batch",
                        "step": j,
                        "wall_time": 1.7e9 + j,
                        "metrics": {"loss": 2.0 / (1 + j / (1000 + 50 * i)) + (j % 97) / 500},
                    }
                    for j in range(start, min(points, start + 10_000))
                ]
                post(api, run_id, records)
    return ids


def live_delay(api: httpx.Client, page, run_id: str, step: int, seq: int, timeout_s: float = 10) -> float | None:
    """Seconds from POSTing a point at `step` to `run_id` to a line of `page` ending there
    (None: not within `timeout_s`)."""
    record = {"seq": seq, "scope": "batch", "step": step, "wall_time": time.time(), "metrics": {"loss": 0.5}}
    start = time.perf_counter()
    api.post(f"/api/v1/runs/{run_id}/logs", json={"records": [record]}).raise_for_status()
    try:
        page.wait_for_function(
            "step => [...document.querySelectorAll('.plot')].some(p => p.data && p.data.some(t => t.x && t.x.at(-1) === step))",
            arg=step,
            timeout=timeout_s * 1000,
        )
    except Exception:
        return None
    return time.perf_counter() - start


def fmt(delays: list[float | None]) -> str:
    got = [d for d in delays if d is not None]
    lost = len(delays) - len(got)
    said = f"p50 {statistics.median(got) * 1000:.0f} ms, max {max(got) * 1000:.0f} ms" if got else "none drawn"
    return said + (f", {lost} of {len(delays)} not drawn within 10 s" if lost else "")


def compare(args) -> None:
    """Time the compare page of `args.compare` runs and 12 run pages open at once."""
    from playwright.sync_api import sync_playwright

    workdir = Path(tempfile.mkdtemp(prefix="fitwatch-pages-"))
    with fitwatch_server(f"sqlite:///{workdir / 'fitwatch.db'}") as (url, _, _), sync_playwright() as p:
        start = time.perf_counter()
        ids = upload_runs(url, args.compare, args.points)
        print(f"uploaded {args.compare} runs of {args.points:,} points in {time.perf_counter() - start:.1f} s")
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        drawn = f"""() => document.body.dataset.ready === 'true'
            && document.querySelector('#charts .plot')?.data?.filter(t => t.meta === 'raw').length === {len(ids)}"""
        # The sweep view's parallel coordinates (WebGL) draw after the chart.
        swept = "() => document.querySelector('#parcoords').data && document.querySelector('#sweep-scatter').data"
        opens, sweeps = [], []
        for _ in range(args.opens):
            page.goto("about:blank")
            start = time.perf_counter()
            page.goto(f"{url}/compare?project=bench")
            page.wait_for_function(drawn, timeout=60000)
            opens.append(time.perf_counter() - start)
            page.wait_for_function(swept, timeout=60000)
            sweeps.append(time.perf_counter() - start)
        kind = page.evaluate("() => document.querySelector('#charts .plot').data[0].type")
        with httpx.Client(base_url=url) as api:
            newest = ids[::-1]  # the page's first runs
            page.goto(f"{url}/compare?project=bench")
            page.wait_for_function(drawn, timeout=60000)
            first_live = live_delay(api, page, newest[0], args.points, 10 * args.points)
            page.wait_for_function(swept, timeout=60000)
            live = [
                live_delay(api, page, newest[k % len(ids)], args.points + 1 + k, 10 * args.points + 1 + k)
                for k in range(args.live)
            ]
            tabs = []
            for run_id in ids[:12]:
                tab = browser.new_page(viewport={"width": 1366, "height": 900})
                tab.goto(f"{url}/runs/{run_id}")
                tabs.append(tab)
            opened = 0  # tabs drawn: a browser holds six connections to a server, streams included
            for tab in tabs:
                try:
                    tab.wait_for_function(DRAWN, arg=1, timeout=10000)
                    opened += 1
                except Exception:
                    pass
            step = args.points + 1 + args.live
            tab_live = [
                live_delay(api, tab, run_id, step + k, 20 * args.points + k)
                for k, (tab, run_id) in enumerate(zip(tabs, ids))
            ]
        if args.screenshot:
            page.screenshot(path=str(args.screenshot), full_page=True)
        browser.close()

    first = statistics.median(opens)
    print(
        f"compare {len(ids)} runs x {args.points:,} points ({kind}), navigation to chart drawn: "
        f"p50 {first:.2f} s, max {max(opens):.2f} s ({args.opens} opens); console errors: {len(errors)}"
    )
    print(
        f"sweep view (parallel coordinates, WebGL) drawn after navigation: p50 {statistics.median(sweeps):.2f} s, max {max(sweeps):.2f} s"
    )
    print(f"live point on the compare page, POST to drawn: {fmt(live)} ({args.live} points)")
    print(f"live point posted as the chart is drawn (the sweep view drawing): {fmt([first_live])}")
    print(f"live point in 12 run pages open at once ({opened} drawn within 10 s), POST to drawn: {fmt(tab_live)}")
    print(
        f"\ntarget: compare drawn < {TARGET_OPEN_S} s (p50, as the run page's): {'met' if first < TARGET_OPEN_S else 'NOT met'}"
    )
    print(
        f"target: live point drawn <= {TARGET_LIVE_S} s: {'met' if all(d is not None and d <= TARGET_LIVE_S for d in live + tab_live) else 'NOT met'}"
    )
    for error in errors[:5]:
        print("console error:", error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--opens", type=int, default=7)
    parser.add_argument("--live", type=int, default=20)
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--compare", type=int, metavar="N", help="time the compare page of N runs instead")
    parser.add_argument("--points", type=int, default=10_000, metavar="P", help="batch points a run, with --compare")
    args = parser.parse_args()
    if args.compare:
        compare(args)
        return

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
