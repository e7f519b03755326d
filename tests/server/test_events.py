"""Server-Sent Events: a run's stream carries metrics, commands and run changes live; the
run-list stream carries every run created or changed."""

from __future__ import annotations

import json
import queue
import threading
import time

import httpx

from tests.helpers import JSON, create_run, make_records, post_logs


class Stream:
    """Reads an SSE stream in a thread; `next(event)` waits for the next such event."""

    def __init__(self, url: str) -> None:
        self.events: queue.Queue = queue.Queue()
        self.ready = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(30, read=None))
        threading.Thread(target=self._read, args=(url,), daemon=True).start()
        assert self.ready.wait(10)

    def _read(self, url: str) -> None:
        try:
            with self._client.stream("GET", url) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                self.ready.set()
                event, data = None, []
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "" and data:
                        self.events.put((event, json.loads("\n".join(data)), time.monotonic()))
                        event, data = None, []
        except httpx.HTTPError:
            pass

    def next(self, event: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            name, data, at = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if name == event:
                return data, at

    def close(self) -> None:
        self._client.close()


def test_run_stream_carries_metrics_commands_and_run_changes(api, server):
    create_run(api, "r")
    stream = Stream(f"{server.url}/api/v1/runs/r/events")
    try:
        first, _ = stream.next("run")
        assert first["id"] == "r" and first["status"] == "running"
        records = make_records(3)
        records[1]["metrics"]["loss"] = float("nan")
        api.post(
            "/api/v1/runs/r/logs",
            content=json.dumps({"records": records}),
            headers={"content-type": "application/json"},
        )
        metrics, _ = stream.next("metrics")
        assert [r["seq"] for r in metrics["records"]] == [0, 1, 2]
        assert metrics["records"][1]["metrics"]["loss"] == "NaN"
        # A retried batch stores nothing, so it streams nothing.
        post_logs(api, "r", records[:1] + make_records(1, start=3))
        assert [r["seq"] for r in stream.next("metrics")[0]["records"]] == [3]
        command = api.post("/api/v1/runs/r/commands", json={"type": "stop_training"}).json()
        assert stream.next("command")[0]["status"] == "pending"
        api.get("/api/v1/runs/r/commands", params={"status": "pending"})
        assert stream.next("command")[0]["status"] == "delivered"
        api.post(f"/api/v1/runs/r/commands/{command['id']}/ack", json={"status": "applied", "step": 4})
        assert stream.next("command")[0] | {} == stream_command_expect(command["id"], "applied")
        api.patch("/api/v1/runs/r", json={"status": "stopped", "reason": "stop command"})
        assert stream.next("run")[0]["status"] == "stopped"
    finally:
        stream.close()


def stream_command_expect(command_id: int, status: str):
    class Match(dict):
        def __eq__(self, other):
            return other["id"] == command_id and other["status"] == status

    return Match()


def test_run_list_stream_announces_new_and_changed_runs(api, server):
    stream = Stream(f"{server.url}/api/v1/events")
    try:
        create_run(api, "a", name="first")
        assert stream.next("run")[0]["name"] == "first"
        api.patch("/api/v1/runs/a", json={"status": "failed", "reason": "ValueError: boom"})
        changed = stream.next("run")[0]
        assert (changed["id"], changed["status"], changed["reason"]) == ("a", "failed", "ValueError: boom")
        api.delete("/api/v1/runs/a", headers=JSON)
        assert stream.next("deleted")[0] == {"id": "a"}
    finally:
        stream.close()


def test_stream_of_unknown_run_is_404(api):
    response = api.get("/api/v1/runs/nope/events")
    assert response.status_code == 404 and response.json() == {"detail": "run 'nope' not found"}


def test_a_run_that_falls_silent_is_announced_interrupted(start_server):
    server = start_server(stale_after=1.0)
    with server.client() as api:
        create_run(api, "quiet")
        stream = Stream(f"{server.url}/api/v1/events")
        try:
            run, _ = stream.next("run")
            assert (run["id"], run["status"]) == ("quiet", "interrupted")
            post_logs(api, "quiet", make_records(1))  # it talks again
            run, _ = stream.next("run")
            assert (run["id"], run["status"]) == ("quiet", "running")
        finally:
            stream.close()
