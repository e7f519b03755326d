"""The server image: its size, and how soon a container of it is healthy.

Builds `fitwatch:server` with `docker/build-images server` (cached after the first time),
prints its size beside its base image's (on a machine without a registry the base is a
local stand-in, not the real `python:3.11-slim`: the figure to carry over is what the image
adds), then starts it `--rounds` times against a PostgreSQL container on host networking
and times, from `docker run`, the first 200 from /healthz and Docker's `healthy`.

    python bench/image.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parents[1]))
from tests.support.containers import DB_HOST, Stack, build, docker, health, logs  # the image tests' own

TARGET_MB = 300.0
TARGET_HEALTHY_S = 5.0
GIVE_UP_S = 120.0  # a start that takes longer failed


def size_mb(image: str) -> float:
    return int(docker("image", "inspect", "-f", "{{.Size}}", image)) / 1e6


def stand_in(image: str) -> bool:
    label = docker("image", "inspect", "-f", '{{index .Config.Labels "fitwatch.standin"}}', image)
    return label not in ("", "<no value>")


def one_start(name: str, url: str) -> tuple[float, float]:
    """Seconds from `docker run` to /healthz answering 200, and to Docker's `healthy`."""
    start = time.perf_counter()
    docker("run", "-d", "--name", name, "--network", "host", "--add-host", f"db:{DB_HOST}",
           "-e", f"FITWATCH_DATABASE_URL={url}", "fitwatch:server")  # fmt: skip
    answered = None
    try:
        while time.perf_counter() - start < GIVE_UP_S:
            if answered is None:
                try:
                    if httpx.get("http://127.0.0.1:8000/healthz", timeout=1).status_code == 200:
                        answered = time.perf_counter() - start
                except httpx.HTTPError:
                    pass
            state = health(name)
            if state == "healthy":
                return answered or time.perf_counter() - start, time.perf_counter() - start
            if state == "unhealthy":
                break
            time.sleep(0.05)
        raise SystemExit(f"{name} did not turn healthy:\n" + logs(name))
    finally:
        docker("rm", "-f", name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    build("server")  # on local stand-ins for the base images where no registry answers

    image, base = size_mb("fitwatch:server"), size_mb("python:3.11-slim")
    kind = "a local stand-in" if stand_in("python:3.11-slim") else "pulled"
    print(f"fitwatch:server {image:.0f} MB: base python:3.11-slim {base:.0f} MB ({kind}) + {image - base:.0f} MB")
    verdict = "PASS" if image <= TARGET_MB else "FAIL"
    print(f"  target: image ≤ {TARGET_MB:.0f} MB: {verdict}")

    tag = uuid.uuid4().hex[:8]
    stack = Stack(db=f"fitwatch-bench-db-{tag}", server=f"fitwatch-bench-server-{tag}", volume=f"fitwatch-bench-{tag}")
    stack.start_db()
    try:
        url = "postgresql+psycopg://fitwatch:fitwatch@db:5432/fitwatch"
        one_start(stack.server, url)  # the schema is made once, not timed
        times = [one_start(f"{stack.server}-{i}", url) for i in range(args.rounds)]
    finally:
        stack.remove()
    ready = statistics.median(t for t, _ in times)
    healthy = statistics.median(h for _, h in times)
    print(f"start to /healthz 200: median {ready:.2f} s; to Docker's healthy: median {healthy:.2f} s "
          f"(the HEALTHCHECK runs every 4 s) over {args.rounds} starts")  # fmt: skip
    print(f"  target: healthy ≤ {TARGET_HEALTHY_S:.0f} s: {'PASS' if healthy <= TARGET_HEALTHY_S else 'FAIL'}")


if __name__ == "__main__":
    main()
