"""Server-Sent Events: a run's stream carries metrics, commands and run changes live; the
run-list stream carries every run created or changed."""

from __future__ import annotations

import json
import queue
import re
import threading
import time

import httpx

from monitor_server.config import Settings
from monitor_server.infra.bus import run_topic
from tests.support.api import JSON, TRAINING, create_run, make_records, post_logs
from tests.support.databases import clean_postgres, needs_postgres
from tests.support.servers import serve
from tests.support.waiting import wait_for


class Stream:
    """Reads an SSE stream in a thread; `next(event)` waits for the next such event."""

    def __init__(self, url: str, last_event_id: str | None = None) -> None:
        self.events: queue.Queue = queue.Queue()
        self.ready = threading.Event()
        self.last_id: str | None = None  # of the last event taken by `next` or `take`
        self._client = httpx.Client(timeout=httpx.Timeout(30, read=None))
        headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
        threading.Thread(target=self._read, args=(url, headers), daemon=True).start()
        assert self.ready.wait(10)

    def _read(self, url: str, headers: dict) -> None:
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                self.ready.set()
                event, data, event_id = None, [], None
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("id:"):
                        event_id = line[3:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "" and data:
                        self.events.put((event, json.loads("\n".join(data)), time.monotonic(), event_id))
                        event, data = None, []
        except httpx.HTTPError:
            pass

    def take(self, timeout: float = 30.0) -> tuple[str, dict]:
        """The next event, whatever it is: (name, data)."""
        name, data, _at, self.last_id = self.events.get(timeout=timeout)
        return name, data

    def next(self, event: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            name, data, at, event_id = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if name == event:
                self.last_id = event_id
                return data, at

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def test_run_stream_carries_metrics_commands_and_run_changes(api, server):
    create_run(api, "r")
    with Stream(f"{server.url}/api/v1/runs/r/events") as stream:
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
        api.get("/api/v1/runs/r/commands", params={"status": "pending"}, headers=TRAINING)
        assert stream.next("command")[0]["status"] == "delivered"
        api.post(f"/api/v1/runs/r/commands/{command['id']}/ack", json={"status": "applied", "step": 4})
        assert stream.next("command")[0] | {} == stream_command_expect(command["id"], "applied")
        api.patch("/api/v1/runs/r", json={"status": "stopped", "reason": "stop command"})
        assert stream.next("run")[0]["status"] == "stopped"


def stream_command_expect(command_id: int, status: str):
    class Match(dict):
        def __eq__(self, other):
            return other["id"] == command_id and other["status"] == status

    return Match()


def test_run_list_stream_announces_new_and_changed_runs(api, server):
    with Stream(f"{server.url}/api/v1/events") as stream:
        create_run(api, "a", name="first")
        assert stream.next("run")[0]["name"] == "first"
        api.patch("/api/v1/runs/a", json={"status": "failed", "reason": "ValueError: boom"})
        changed = stream.next("run")[0]
        assert (changed["id"], changed["status"], changed["reason"]) == ("a", "failed", "ValueError: boom")
        api.delete("/api/v1/runs/a", headers=JSON)
        assert stream.next("deleted")[0] == {"id": "a"}


def test_stream_of_unknown_run_is_404(api):
    response = api.get("/api/v1/runs/nope/events")
    assert response.status_code == 404 and response.json() == {"detail": "run 'nope' not found"}


def test_a_run_that_falls_silent_is_announced_interrupted(start_server):
    server = start_server(stale_after=1.0)
    with server.client() as api:
        create_run(api, "quiet")
        with Stream(f"{server.url}/api/v1/events") as stream:
            run, _ = stream.next("run")
            assert (run["id"], run["status"]) == ("quiet", "interrupted")
            post_logs(api, "quiet", make_records(1))  # it talks again
            run, _ = stream.next("run")
            assert (run["id"], run["status"]) == ("quiet", "running")


def test_a_run_that_falls_silent_says_for_how_long(start_server):
    server = start_server(stale_after=1.0)
    with server.client() as api:
        create_run(api, "quiet")
        with Stream(f"{server.url}/api/v1/events") as stream:
            run, _ = stream.next("run")
            silent = re.fullmatch(r"no contact from the training for (\d+) s", run["reason"] or "")
            assert run["status"] == "interrupted" and silent and int(silent[1]) >= 1, run
            read = api.get("/api/v1/runs/quiet").json()
            assert read["status"] == "interrupted" and read["reason"].startswith("no contact from the training for ")
            post_logs(api, "quiet", make_records(1))  # it talks again: running, with no reason
            run, _ = stream.next("run")
            assert (run["status"], run["reason"]) == ("running", None)


def seqs(data: dict) -> list[int]:
    return [r["seq"] for r in data["records"]]


def test_a_stream_that_reconnects_gets_every_event_it_missed_in_order(api, server):
    create_run(api, "r")
    stream = Stream(f"{server.url}/api/v1/runs/r/events")
    stream.next("run")
    post_logs(api, "r", make_records(2))
    assert seqs(stream.next("metrics")[0]) == [0, 1]
    resume_from = stream.last_id
    stream.close()
    # While it is away: points, a command, a run change.
    for start in (2, 4, 6):
        post_logs(api, "r", make_records(2, start=start))
    api.post("/api/v1/runs/r/commands", json={"type": "stop_training"})
    api.patch("/api/v1/runs/r", json={"name": "renamed"})
    with Stream(f"{server.url}/api/v1/runs/r/events", last_event_id=resume_from) as again:
        # What was missed comes first; across processes (PostgreSQL) what was still on its
        # way comes live after the run's state: either way each once, in order, no resync.
        events = [again.take()]
        while sum(len(seqs(d)) for n, d in events if n == "metrics") < 6 or events[-1][0] != "run":
            events.append(again.take())
        names = [name for name, _ in events]
        assert "resync" not in names and names.count("command") == 1
        assert [seq for name, data in events if name == "metrics" for seq in seqs(data)] == [2, 3, 4, 5, 6, 7]
        assert events[-1][1]["name"] == "renamed"
        # And it goes on live.
        post_logs(api, "r", make_records(1, start=8))
        assert seqs(again.next("metrics")[0]) == [8]


def left_after_one_point(api, server) -> str:
    """Run `r` streamed until its first point, then the stream left: the id it had last."""
    create_run(api, "r")
    stream = Stream(f"{server.url}/api/v1/runs/r/events")
    stream.next("run")
    post_logs(api, "r", make_records(1))
    stream.next("metrics")
    stream.close()
    return stream.last_id


def test_a_stream_told_to_resync_where_it_cannot_be_given_all_it_missed(api, server, start_server):
    old_id = left_after_one_point(api, server)
    # Another process (a restart, another replica) numbers its events its own way.
    other = start_server()
    for url, last_event_id in ((other.url, old_id), (server.url, "garbage"), (server.url, "-")):
        with Stream(f"{url}/api/v1/runs/r/events", last_event_id=last_event_id) as again:
            assert again.take()[0] == "resync", (url, last_event_id)
            assert again.take()[0] == "run"


def test_more_missed_than_a_topic_keeps_is_a_resync(api, server, monkeypatch):
    from monitor_server.infra import bus as events

    monkeypatch.setattr(events, "RECENT", 3)
    last = left_after_one_point(api, server)
    for seq in range(1, 3):  # two missed: kept
        post_logs(api, "r", make_records(1, start=seq))
    again = Stream(f"{server.url}/api/v1/runs/r/events", last_event_id=last)
    assert [again.take()[0] for _ in range(3)] == ["metrics", "metrics", "run"]
    last = again.last_id
    again.close()
    for seq in range(3, 8):  # five missed, three kept
        post_logs(api, "r", make_records(1, start=seq))
    with Stream(f"{server.url}/api/v1/runs/r/events", last_event_id=last) as again:
        assert [again.take()[0] for _ in range(2)] == ["resync", "run"]


def test_the_run_list_stream_starts_ready_and_resumes_too(api, server):
    stream = Stream(f"{server.url}/api/v1/events")
    stream.next("ready")
    start = stream.last_id
    stream.close()
    create_run(api, "a")
    create_run(api, "b")
    with Stream(f"{server.url}/api/v1/events", last_event_id=start) as again:
        events = [again.take()]
        while {"a", "b"} - {data.get("id") for name, data in events if name == "run"}:
            events.append(again.take())
        assert [data["id"] for name, data in events if name == "run"] == ["a", "b"]
        assert "resync" not in [name for name, _ in events]


def test_live_streams_are_told_to_resync_when_events_may_have_been_lost(api, server):
    # What the PostgreSQL bus does when its listener connection comes back after a break.
    create_run(api, "r")
    with Stream(f"{server.url}/api/v1/runs/r/events") as stream:
        stream.next("run")
        before = stream.last_id
        server.app.state.bus.lost()
        stream.next("resync")
        post_logs(api, "r", make_records(1))
        assert seqs(stream.next("metrics")[0]) == [0]
        assert stream.last_id.split("-")[0] != before.split("-")[0]  # a new epoch: old ids resync


def opening(stream: Stream) -> list[tuple[str, dict]]:
    """The events of a stream of runs up to its `ready`, that one included."""
    events = [stream.take()]
    while events[-1][0] != "ready":
        events.append(stream.take())
    return events


def test_one_stream_follows_several_runs_each_event_naming_its_run(api, server):
    create_run(api, "a", name="first")
    create_run(api, "b", name="second")
    with Stream(f"{server.url}/api/v1/events?runs=a,b,gone,a") as stream:
        # Each run as it is (with its config), one that is not there as deleted, then ready.
        first = opening(stream)
        assert [(name, data["run_id"]) for name, data in first[:3]] == [("run", "a"), ("run", "b"), ("deleted", "gone")]
        assert first[0][1]["name"] == "first" and "config" in first[0][1] and first[2][1]["id"] == "gone"
        assert first[3] == ("ready", {})
        post_logs(api, "b", make_records(2))
        post_logs(api, "a", make_records(1))
        metrics = [stream.next("metrics")[0] for _ in range(2)]
        assert [(m["run_id"], seqs(m)) for m in metrics] == [("b", [0, 1]), ("a", [0])]
        api.post("/api/v1/runs/b/commands", json={"type": "stop_training"})
        command, _ = stream.next("command")
        assert (command["run_id"], command["status"]) == ("b", "pending")
        api.patch("/api/v1/runs/a", json={"name": "renamed"})
        changed, _ = stream.next("run")
        assert (changed["run_id"], changed["id"], changed["name"]) == ("a", "a", "renamed")
        api.delete("/api/v1/runs/b", headers=JSON)
        assert stream.next("deleted")[0] == {"run_id": "b", "id": "b"}


def test_a_stream_of_runs_carries_the_run_list_with_list_true(api, server):
    create_run(api, "a")
    with Stream(f"{server.url}/api/v1/events?runs=a&list=true") as stream:
        assert [name for name, _ in opening(stream)] == ["run", "ready"]
        create_run(api, "new", name="new one")
        listed, _ = stream.next("list.run")
        assert listed["id"] == "new" and "config" not in listed
        api.patch("/api/v1/runs/a", json={"status": "finished"})
        events = [stream.take(), stream.take()]
        assert sorted(name for name, _ in events) == ["list.run", "run"]
        assert {data["status"] for _, data in events} == {"finished"}
        api.delete("/api/v1/runs/new", headers=JSON)
        assert stream.next("list.deleted")[0] == {"id": "new"}


def test_a_stream_of_runs_resumes_and_resyncs_only_the_runs_it_cannot_vouch_for(api, server):
    create_run(api, "a")
    create_run(api, "b")
    stream = Stream(f"{server.url}/api/v1/events?runs=a")
    opening(stream)
    post_logs(api, "a", make_records(1))
    stream.next("metrics")
    last = stream.last_id
    stream.close()
    post_logs(api, "a", make_records(2, start=1))
    post_logs(api, "b", make_records(1))  # nobody followed b: its events were not kept
    # A new EventSource cannot send Last-Event-ID: the query says it.
    with Stream(f"{server.url}/api/v1/events?runs=a,b&last_event_id={last}") as again:
        events = opening(again)
        assert events[0] == ("resync", {"run_id": "b"})
        assert [(d["run_id"], seqs(d)) for n, d in events if n == "metrics"] == [("a", [1, 2])]
        assert [n for n, _ in events].count("resync") == 1 and [n for n, _ in events][-3:] == ["run", "run", "ready"]
        post_logs(api, "b", make_records(1, start=1))
        live, _ = again.next("metrics")
        assert (live["run_id"], seqs(live)) == ("b", [1])
    # An id another process numbered: everything is read again, said once for all runs.
    with Stream(f"{server.url}/api/v1/events?runs=a,b", last_event_id=f"0{last}") as other:
        assert [name for name, _ in opening(other)] == ["resync", "run", "run", "ready"]
        assert other.events.empty()


def test_a_stream_of_runs_refuses_malformed_ids_and_too_many(api, server):
    for runs, said in (
        ("a,b c", "'b c' is not a run id"),
        ("a,,b", "'' is not a run id"),
        (",".join(map(str, range(101))), "101 runs, at most 100"),
    ):
        response = api.get("/api/v1/events", params={"runs": runs})
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"] == ["query", "runs"] and error["msg"].startswith(said), error
    # As many as it takes, each of the longest id, pass uvicorn's limits on a request line.
    longest = [f"{i:03d}".ljust(64, "x") for i in range(100)]
    with Stream(f"{server.url}/api/v1/events?runs={','.join(longest)}&list=true") as stream:
        events = opening(stream)
        assert [data["run_id"] for _, data in events[:-1]] == longest


@needs_postgres
def test_a_stream_of_runs_gets_the_events_of_every_replica(pg_database):
    clean_postgres(pg_database)
    settings = Settings(database_url=pg_database)
    with serve(settings) as one, serve(settings) as two, two.client() as api:
        create_run(api, "a")
        create_run(api, "b")
        with Stream(f"{one.url}/api/v1/events?runs=a,b&list=true") as stream:
            opening(stream)
            # The other replica sends metrics once it has heard that this one streams the run.
            heard = two.app.state.bus.has_subscribers
            wait_for(lambda: heard(run_topic("a")) and heard(run_topic("b")), what="the replica to hear of the stream")
            post_logs(api, "b", make_records(1))
            metrics, _ = stream.next("metrics")
            assert (metrics["run_id"], seqs(metrics)) == ("b", [0])
            api.post("/api/v1/runs/a/commands", json={"type": "stop_training"})
            assert stream.next("command")[0]["run_id"] == "a"
            create_run(api, "c")
            assert stream.next("list.run")[0]["id"] == "c"
