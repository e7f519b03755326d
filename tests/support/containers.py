"""Containers for real, for tests/docker and bench/image.py: the Dockerfile's images built by
`docker/build-images` (on local stand-in bases where no registry answers), run on host
networking against a PostgreSQL container.

On host networking every container shares this machine's loopback: the server takes port
8000 (as its HEALTHCHECK and the compose file expect) and the PostgreSQL stand-in
127.0.0.2:5432, beside this machine's own PostgreSQL on 127.0.0.1:5432."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.waiting import wait_for

ROOT = Path(__file__).parents[2]
SERVER_URL = "http://127.0.0.1:8000"
DB_HOST = "127.0.0.2"  # where the database container listens: this machine's own has 127.0.0.1
STARTUP_S = 120.0  # a generous bound on a container's start on a loaded machine


def docker(*args: str, check: bool = True, timeout: float = 600) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def build(target: str) -> str:
    """Where no registry answers, on local stand-ins for the base images."""
    script = str(ROOT / "docker" / "build-images")
    done = subprocess.run(
        [script, target], capture_output=True, text=True, env={**os.environ, "FITWATCH_STANDINS": "1"}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return f"fitwatch:{target}"


def health(container: str) -> str:
    return docker("inspect", "-f", "{{.State.Health.Status}}", container)


def wait_healthy(container: str) -> None:
    wait_for(lambda: health(container) == "healthy", timeout=STARTUP_S, what=f"{container} to turn healthy")


def answers(url: str = SERVER_URL) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Stack:
    """A PostgreSQL container on a named volume and a server container, both on host
    networking, started as the compose file starts them."""

    db: str
    server: str
    volume: str
    password: str = "fitwatch"

    def start_db(self) -> None:
        docker("run", "-d", "--name", self.db, "--network", "host", "-v", f"{self.volume}:/var/lib/postgresql/data",
               *env_args({"POSTGRES_USER": "fitwatch", "POSTGRES_PASSWORD": self.password, "POSTGRES_DB": "fitwatch"}),
               "postgres:16-alpine", "postgres", "-c", f"listen_addresses={DB_HOST}")  # fmt: skip
        wait_for(
            lambda: subprocess.run(["docker", "exec", self.db, "pg_isready", "-U", "fitwatch", "-d", "fitwatch"],
                                   capture_output=True).returncode == 0,
            timeout=STARTUP_S, what="the database to accept connections",
        )  # fmt: skip

    def start_server(self, image: str, environment: dict[str, str], command: list[str]) -> None:
        docker("run", "-d", "--name", self.server, "--network", "host", "--add-host", f"db:{DB_HOST}",
               *env_args(environment), image, *command)  # fmt: skip
        wait_healthy(self.server)

    def remove(self) -> None:
        for container in (self.server, self.db):
            docker("rm", "-f", "-v", container, check=False)
        docker("volume", "rm", "-f", self.volume, check=False)


def env_args(environment: dict[str, str]) -> list[str]:
    return [arg for key, value in environment.items() for arg in ("-e", f"{key}={value}")]


def logs(container: str, tail: str = "40") -> str:
    done = subprocess.run(["docker", "logs", "--tail", tail, container], capture_output=True, text=True)
    return done.stdout + done.stderr


def inspect(container: str) -> dict:
    return json.loads(docker("inspect", container))[0]
