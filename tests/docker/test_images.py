"""The server image for real: started as the compose file starts it, against a PostgreSQL
container on a named volume; a real fit on this machine logs to it, its run page draws the
run, and the data outlives restarts of either container and a new database container."""

from __future__ import annotations

import httpx
import pytest

from client_callbacks import RemoteCallback
from tests.server.test_deploy import compose, substitute
from tests.support.api import batch_steps
from tests.support.containers import SERVER_URL, answers, docker, inspect, logs, wait_healthy
from tests.support.training import STEPS, fit
from tests.support.waiting import wait_for
from tests.web.test_pages import plot_data

pytestmark = pytest.mark.timeout(1800)  # a first build of the image installs every dependency


def as_compose_runs_it() -> tuple[dict[str, str], list[str]]:
    """The server service's environment and command, with compose's defaults."""
    service = compose()["services"]["server"]
    environment = {key: substitute(str(value), {}) for key, value in service["environment"].items()}
    return environment, [substitute(part, {}) for part in service["command"]]


def test_the_server_image_serves_a_real_fit_and_keeps_its_data(stack, server_image, browser, tmp_path, request):
    environment, command = as_compose_runs_it()
    stack.start_db()
    stack.start_server(server_image, environment, command)  # returns once its HEALTHCHECK says healthy

    # Its own user, not root, for every process of it (`--workers 2`: three).
    assert inspect(stack.server)["Config"]["User"] == "fitwatch"
    uids = [line.split()[1] for line in docker("top", stack.server, "-o", "pid,uid").splitlines()[1:]]
    assert len(uids) >= 3 and set(uids) == {"10001"}, uids
    api = httpx.Client(base_url=SERVER_URL, timeout=30)
    request.addfinalizer(api.close)
    assert api.get("/healthz").json() == {"status": "ok", "database": "postgresql"}

    cb = RemoteCallback(url=SERVER_URL, spool_dir=tmp_path / "spool", system_interval=None)
    fit([cb], epochs=2)
    assert api.get(f"/api/v1/runs/{cb.run_id}").json()["status"] == "finished"
    steps = list(range(2 * STEPS))
    assert batch_steps(api, cb.run_id) == steps

    page = browser.new_page(base_url=SERVER_URL)
    try:
        page.goto(f"/runs/{cb.run_id}")
        page.wait_for_selector("body[data-ready=true]")
        [loss] = plot_data(page, "loss (batch)")
        assert loss["x"] == steps
    finally:
        page.close()

    # The downloadable report draws with plotly's Python side, slimmed in the image.
    report = api.get(f"/runs/{cb.run_id}/report.html")
    assert report.status_code == 200 and "Plotly.newPlot" in report.text

    # The access log has the requests, not the health checks made every 4 s.
    requests = logs(stack.server, tail="all")
    assert "POST /api/v1/runs" in requests and "/healthz" not in requests

    docker("restart", stack.server)
    wait_healthy(stack.server)
    assert batch_steps(api, cb.run_id) == steps

    # The database restarts under the running server: it reconnects and takes a new run.
    docker("restart", stack.db)
    wait_for(answers, timeout=60, what="the server to reach the restarted database")
    again = RemoteCallback(url=SERVER_URL, spool_dir=tmp_path / "spool", system_interval=None)
    fit([again], epochs=1)
    assert batch_steps(api, again.run_id) == list(range(STEPS))

    # A new database container on the same volume finds everything.
    docker("rm", "-f", stack.db)
    stack.start_db()
    wait_for(answers, timeout=60, what="the server to reach the new database container")
    assert batch_steps(api, cb.run_id) == steps
    assert batch_steps(api, again.run_id) == list(range(STEPS))
