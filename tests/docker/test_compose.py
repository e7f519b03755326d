"""`docker compose --profile demo up` for real, with an override that only builds on the
host's network: the database turns healthy, the server after it, the demo training logs to
the server, and a stop sent through the API ends it at a batch edge."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import httpx
import pytest
import yaml

from tests.support.containers import ROOT, SERVER_URL, STARTUP_S, docker, logs, wait_healthy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(1800)  # the first build of the demo image installs TensorFlow

# Only the build changes: pip reaches the package index through the host's network. The
# stack runs on compose's own network, and the test reaches it only through the port the
# compose file publishes on loopback.
OVERRIDE = {"services": {name: {"build": {"network": "host"}} for name in ("server", "demo")}}


@pytest.fixture
def compose(engine, tmp_path):
    """`docker-compose` on the project's compose file plus the override, as its own project."""
    if shutil.which("docker-compose") is None:
        pytest.fail("these tests need a compose implementation: apt-get install docker-compose")
    override = tmp_path / "docker-compose.override.yml"
    override.write_text(yaml.safe_dump(OVERRIDE))
    project = f"fitwatch-test-{uuid.uuid4().hex[:8]}"
    base = ["docker-compose", "-p", project, "-f", str(ROOT / "docker-compose.yml"), "-f", str(override)]

    def run(*args: str) -> str:
        done = subprocess.run([*base, *args], cwd=ROOT, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, f"docker-compose {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    run.container = lambda service: run("--profile", "demo", "ps", "-q", service).strip()
    yield run
    subprocess.run(
        [*base, "--profile", "demo", "down", "-v", "--rmi", "local", "--remove-orphans"], cwd=ROOT, capture_output=True
    )


def test_compose_up_runs_the_demo_against_a_healthy_server_on_postgres(compose, server_image, demo_image):
    compose("--profile", "demo", "up", "-d", "--build")
    server, demo = compose.container("server"), compose.container("demo")
    wait_healthy(compose.container("db"))
    wait_healthy(server)
    with httpx.Client(base_url=SERVER_URL, timeout=30) as api:
        assert api.get("/healthz").json() == {"status": "ok", "database": "postgresql"}

        def demo_run() -> dict | None:
            runs = api.get("/api/v1/runs").json()
            if runs and any(s["count"] for s in api.get(f"/api/v1/runs/{runs[0]['id']}/series").json()):
                return runs[0]
            return None

        run = wait_for(demo_run, timeout=STARTUP_S, what=f"the demo to log:\n{logs(demo)}")
        stop = api.post(f"/api/v1/runs/{run['id']}/commands", json={"type": "stop_training"})
        assert stop.status_code == 201, stop.text
        assert docker("wait", demo, timeout=STARTUP_S) == "0", logs(demo)
        ended = api.get(f"/api/v1/runs/{run['id']}").json()
        assert ended["status"] == "stopped", ended
        command = api.get(f"/api/v1/runs/{run['id']}/commands").json()[0]
        assert command["status"] == "applied", command
        assert api.get(f"/api/v1/runs/{run['id']}/series/batch/loss").json()["count"] > 0
