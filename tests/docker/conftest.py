"""Container fixtures: a Docker engine, the Dockerfile's images and a PostgreSQL plus server
stack (tests/support/containers.py). Without a Docker engine these tests skip, unless
FITWATCH_REQUIRE_DOCKER=1 (CI), where that is a failure."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.support.containers import Stack, build, docker


@pytest.fixture(scope="session")
def engine() -> None:
    """A Docker engine answers, and port 8000 is free for the server."""
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode:
        if os.environ.get("FITWATCH_REQUIRE_DOCKER") == "1":
            pytest.fail("FITWATCH_REQUIRE_DOCKER=1 but no Docker engine answers (start dockerd)")
        pytest.skip("no Docker engine (apt-get install docker.io; dockerd &)")
    # What a killed earlier run left behind would hold port 8000.
    for kind, listing in (
        ("container", ["ps", "-aq"]),
        ("volume", ["volume", "ls", "-q"]),
        ("network", ["network", "ls", "-q"]),
    ):
        left = docker(*listing, "--filter", "name=fitwatch-test-").split()
        if left:
            docker(kind, "rm", *(["-f"] if kind != "network" else []), *left, check=False)
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 8000)) == 0:
            pytest.fail("port 8000 is taken: the server container needs it")


@pytest.fixture(scope="session")
def server_image(engine) -> str:
    return build("server")


@pytest.fixture(scope="session")
def demo_image(engine) -> str:
    return build("demo")


@pytest.fixture
def stack(engine) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:8]
    made = Stack(db=f"fitwatch-test-db-{tag}", server=f"fitwatch-test-server-{tag}", volume=f"fitwatch-test-{tag}")
    yield made
    made.remove()
