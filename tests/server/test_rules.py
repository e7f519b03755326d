"""Rules that act: judged as points are stored, once per run or per step, across retried
posts and several server processes; webhooks off the request path; admin-only writes and
422s that name the field."""

from __future__ import annotations

import itertools
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.server.test_events import Stream
from tests.support.api import JSON, add_rule, assert_error, create_run, post_logs
from tests.support.databases import needs_postgres
from tests.support.servers import ServerProcess
from tests.support.waiting import wait_for

NAN_STOP = {"when": {"scope": "batch", "name": "loss", "op": "nan"}, "then": {"type": "stop_training"}}


def record(seq: int, value, scope: str = "batch", name: str = "loss", step: int | None = None) -> dict:
    step = seq if step is None else step
    return {"seq": seq, "scope": scope, "step": step, "wall_time": 1e9 + seq, "metrics": {name: value}}


def firings(api: httpx.Client, run_id: str) -> list[dict]:
    response = api.get(f"/api/v1/runs/{run_id}/firings")
    assert response.status_code == 200, response.text
    return response.json()


def test_nan_rule_stops_the_run_once_and_a_retried_post_fires_nothing(api):
    create_run(api, "r", project="p")
    rule = add_rule(api, project="p", **NAN_STOP)
    assert rule["description"] == "loss (batch) is NaN or infinite -> stop_training"
    batch = [record(0, 1.0), record(1, 0.9), record(2, "NaN"), record(3, "NaN")]
    answer = post_logs(api, "r", batch).json()
    # The command is in the answer to the very post that carried the NaN.
    assert [(c["type"], c["issued_by"]) for c in answer["commands"]] == [("stop_training", f"rule:{rule['id']}")]
    assert post_logs(api, "r", batch).json()["duplicates"] == 4  # the client retried it
    post_logs(api, "r", [record(4, 1.0), record(5, "Infinity")])  # once a run: not again
    fired = firings(api, "r")
    assert [(f["step"], f["value"], f["command_id"]) for f in fired] == [(2, "NaN", answer["commands"][0]["id"])]
    assert api.get(f"/api/v1/rules/{rule['id']}/firings").json() == fired
    assert api.get(f"/api/v1/rules/{rule['id']}").json()["firings"] == 1
    assert len(api.get("/api/v1/runs/r/commands").json()) == 1


def test_rule_scope_run_project_or_every_run(api):
    for run_id, project in (("a", "p"), ("b", "p"), ("c", "q")):
        create_run(api, run_id, project=project)
    by_run = add_rule(
        api,
        run_id="a",
        when={"scope": "batch", "name": "loss", "op": "above", "value": 5},
        notify=False,
        then={"type": "pause"},
    )
    by_project = add_rule(
        api,
        project="p",
        when={"scope": "batch", "name": "loss", "op": "above", "value": 5},
        then={"type": "checkpoint"},
    )
    everywhere = add_rule(
        api, when={"scope": "batch", "name": "loss", "op": "above", "value": 5}, then={"type": "stop_training"}
    )
    for run_id in "abc":
        post_logs(api, run_id, [record(0, 9.0)])
    fired = {run_id: sorted(f["rule_id"] for f in firings(api, run_id)) for run_id in "abc"}
    assert fired == {
        "a": [by_run["id"], by_project["id"], everywhere["id"]],
        "b": [by_project["id"], everywhere["id"]],
        "c": [everywhere["id"]],
    }


def test_threshold_rules_fire_where_the_condition_turns_true(api):
    create_run(api, "r")
    above = add_rule(
        api,
        when={"scope": "epoch", "name": "acc", "op": "above", "value": 0.5},
        then={"type": "checkpoint"},
        once_per_run=False,
    )
    below = add_rule(
        api,
        when={"scope": "epoch", "name": "acc", "op": "below", "value": 0.2},
        then={"type": "pause"},
        once_per_run=False,
    )
    values = [0.1, 0.15, 0.3, 0.6, 0.7, "NaN", 0.8, 0.4, 0.9, 0.1]
    # One point a post and several a post judge alike: the state carries across posts.
    post_logs(api, "r", [record(i, v, "epoch", "acc") for i, v in enumerate(values[:4])])
    for i, v in enumerate(values[4:], start=4):
        post_logs(api, "r", [record(i, v, "epoch", "acc")])
    steps = {rule["id"]: [] for rule in (above, below)}
    for f in firings(api, "r"):
        steps[f["rule_id"]].append(f["step"])
    # NaN is neither above nor below: 0.8 after it turns "above" true again.
    assert steps == {above["id"]: [3, 6, 8], below["id"]: [0, 9]}


def test_no_improvement_fires_after_patience_points_and_counts_again(api):
    create_run(api, "r")
    rule = add_rule(
        api,
        when={"scope": "epoch", "name": "val_loss", "op": "no_improvement", "patience": 3},
        then={"type": "set_lr", "args": {"factor": 0.5}},
        once_per_run=False,
    )
    values = [1.0, 0.9, 0.95, 0.9, "NaN", 0.8, 0.85, 0.8, 0.81, 0.82, 0.83, 0.7, 0.9, "-Infinity", 0.8, 0.75]
    for step, value in enumerate(values):
        post_logs(api, "r", [record(step, value, "epoch", "val_loss")])
    fired = firings(api, "r")
    # 0.9 again is no better than 0.9 (strictly lower counts); NaN and -Infinity are no
    # improvement; firing starts the count again.
    assert [f["step"] for f in fired] == [4, 8, 14]
    # The same points in one post, or split anywhere, fire at the same steps.
    for run_id, cuts in (("whole", [0, len(values)]), ("split", [0, 3, 4, 9, 13, len(values)])):
        create_run(api, run_id)
        for lo, hi in itertools.pairwise(cuts):
            post_logs(api, run_id, [record(i, values[i], "epoch", "val_loss") for i in range(lo, hi)])
        assert [f["step"] for f in firings(api, run_id)] == [4, 8, 14]
    commands = api.get("/api/v1/runs/r/commands").json()
    assert [(c["type"], c["args"]["factor"], c["issued_by"]) for c in commands] == [
        ("set_lr", 0.5, f"rule:{rule['id']}")
    ] * 3
    maximize = add_rule(
        api,
        run_id="r",
        when={"scope": "epoch", "name": "acc", "op": "no_improvement", "patience": 2, "mode": "max"},
        notify=False,
        then={"type": "checkpoint"},
    )
    for step, value in enumerate([0.5, 0.6, 0.4, 0.6]):
        post_logs(api, "r", [record(100 + step, value, "epoch", "acc", step=step)])
    assert [f["step"] for f in firings(api, "r") if f["rule_id"] == maximize["id"]] == [3]


FLAP = {
    "when": {"scope": "batch", "name": "loss", "op": "above", "value": 0.5},
    "then": {"type": "checkpoint"},
    "once_per_run": False,
}


def flapping(start: int, n: int) -> list[dict]:
    """Points above and below the threshold in turn: every other point turns `above` true."""
    return [record(seq, 1.0 if seq % 2 == 0 else 0.0) for seq in range(start, start + n)]


def rule_counts(api: httpx.Client, rule_id: int) -> tuple[int, int]:
    rule = api.get(f"/api/v1/rules/{rule_id}").json()
    return rule["firings"], rule["suppressed"]


def test_a_flapping_series_issues_max_firings_commands_and_counts_the_rest_suppressed(api):
    create_run(api, "r")
    rule = add_rule(api, **FLAP)
    assert rule["max_firings"] == 100 and rule["suppressed"] == 0
    answer = post_logs(api, "r", flapping(0, 1000)).json()  # turns true 500 times
    assert len(answer["commands"]) == 100
    assert len(api.get("/api/v1/runs/r/commands").json()) == 100
    assert rule_counts(api, rule["id"]) == (100, 400)
    fired = firings(api, "r")
    assert [f["step"] for f in fired if not f["suppressed"]] == list(range(0, 200, 2))
    [suppressed] = [f for f in fired if f["suppressed"]]
    assert (suppressed["step"], suppressed["suppressed"], suppressed["command_id"]) == (200, 400, None)
    assert suppressed["message"] == "400 more firings suppressed: max_firings is 100 a run"
    assert api.get(f"/api/v1/rules/{rule['id']}/firings").json() == fired
    # Later posts add to the count, and no command.
    answer = post_logs(api, "r", flapping(1000, 10)).json()
    assert len(answer["commands"]) == 100  # the same unacknowledged ones
    assert rule_counts(api, rule["id"]) == (100, 405)
    assert firings(api, "r")[-1]["suppressed"] == 405


def test_max_firings_holds_across_posts_and_for_each_run(api):
    rule = add_rule(api, **FLAP, max_firings=5)
    for run_id in ("a", "b"):
        create_run(api, run_id)
        issued = []
        for start in range(0, 16, 4):  # two firings a post
            answer = post_logs(api, run_id, flapping(start, 4)).json()
            issued = [c["id"] for c in answer["commands"]]
            assert len(issued) <= 5
        assert len(issued) == 5
        assert [f["step"] for f in firings(api, run_id) if not f["suppressed"]] == [0, 2, 4, 6, 8]
        assert [f["suppressed"] for f in firings(api, run_id)][-1] == 3
    assert rule_counts(api, rule["id"]) == (10, 6)


def test_a_finished_run_gets_a_firing_without_a_command(api):
    create_run(api, "r")
    api.patch("/api/v1/runs/r", json={"status": "finished"})
    add_rule(api, **NAN_STOP)
    post_logs(api, "r", [record(0, "NaN")])  # a spool synced after the run ended
    [fired] = firings(api, "r")
    assert (fired["command_id"], fired["message"]) == (None, "no command issued: the run is finished")
    assert api.get("/api/v1/runs/r/commands").json() == []


def test_firings_are_pushed_as_rule_events(api, server):
    create_run(api, "r")
    add_rule(api, **NAN_STOP)
    run_stream = Stream(f"{server.url}/api/v1/runs/r/events")
    list_stream = Stream(f"{server.url}/api/v1/events")
    try:
        run_stream.next("run")
        post_logs(api, "r", [record(0, "-Infinity")])
        for stream in (run_stream, list_stream):
            event, _ = stream.next("rule")
            assert (event["run_id"], event["step"], event["value"], event["name"]) == ("r", 0, "-Infinity", "loss")
        command, _ = run_stream.next("command")
        assert command["issued_by"].startswith("rule:")
    finally:
        run_stream.close()
        list_stream.close()


def test_deleting_rules_and_runs(api):
    create_run(api, "r")
    create_run(api, "other")
    own = add_rule(api, run_id="r", **NAN_STOP)
    shared = add_rule(api, **NAN_STOP)
    post_logs(api, "r", [record(0, "NaN")])
    assert api.delete(f"/api/v1/rules/{shared['id']}", headers=JSON).status_code == 204
    assert_error(api.get(f"/api/v1/rules/{shared['id']}"), 404)
    assert_error(api.delete(f"/api/v1/rules/{shared['id']}", headers=JSON), 404)
    assert [f["rule_id"] for f in firings(api, "r")] == [own["id"]]
    # The commands it issued stay in the run's history.
    assert len(api.get("/api/v1/runs/r/commands").json()) == 2
    assert api.delete("/api/v1/runs/r", headers=JSON).status_code == 204
    assert api.get("/api/v1/rules").json() == []  # the rule of that run alone went with it
    assert_error(api.get("/api/v1/runs/r/firings"), 404)


BAD_RULES = [
    ({"when": {"name": "loss", "op": "above"}, "notify": False, "then": {"type": "pause"}}, "value"),
    ({"when": {"name": "loss", "op": "no_improvement", "patience": 0}, "then": {"type": "pause"}}, "patience"),
    ({"when": {"name": "loss", "op": "rises"}, "then": {"type": "pause"}}, "op"),
    ({"when": {"name": "loss", "op": "nan", "scope": "minute"}, "then": {"type": "pause"}}, "scope"),
    ({"when": {"name": "", "op": "nan"}, "then": {"type": "pause"}}, "name"),
    ({"when": {"name": "loss", "op": "below", "value": "NaN"}, "then": {"type": "pause"}}, "value"),
    ({"when": {"name": "loss", "op": "nan"}, "then": {"type": "explode"}}, "then"),
    ({"when": {"name": "loss", "op": "nan"}, "then": {"type": "set_lr", "args": {"value": -1}}}, "value"),
    ({"when": {"name": "loss", "op": "nan"}, "then": {"type": "set_lr", "args": {"value": 1e6}}}, "then"),
    ({"when": {"name": "loss", "op": "nan"}, "then": {"type": "checkpoint", "args": {"name": "../x"}}}, "name"),
    ({"when": {"name": "loss", "op": "nan"}}, "then"),
    ({"when": {"name": "loss", "op": "nan"}, "notify": True}, "notify"),
    ({"when": {"name": "loss", "op": "nan"}, "then": {"type": "pause"}, "project": "p", "run_id": "r"}, "run_id"),
    ({"when": {"name": "loss", "op": "nan"}, "then": {"type": "pause"}, "run_id": "a/b"}, "run_id"),
    ({"when": {"name": "loss", "op": "nan"}, "then": {"type": "pause"}, "url": "http://x"}, "url"),
    ({"when": {"name": "loss", "op": "nan"}, "then": {"type": "pause"}, "max_firings": 0}, "max_firings"),
    ({"when": {"name": "loss", "op": "nan"}, "then": {"type": "pause"}, "max_firings": 1001}, "max_firings"),
    ({"when": {"name": "loss", "op": "nan"}, "then": {"type": "pause"}, "max_firings": "5"}, "max_firings"),
]


@pytest.mark.parametrize(("body", "field"), BAD_RULES)
def test_a_bad_rule_is_a_422_naming_the_field(api, body, field):
    detail = assert_error(api.post("/api/v1/rules", json=body), 422)
    assert field in json.dumps(detail), detail
    assert api.get("/api/v1/rules").json() == []


def test_rules_are_an_admin_write(start_server):
    server = start_server(token="admin-secret", ingest_token="ingest-secret")
    with server.client() as anonymous, server.client(headers={"authorization": "Bearer ingest-secret"}) as trainer:
        assert_error(anonymous.post("/api/v1/rules", json=NAN_STOP), 401)
        assert_error(trainer.post("/api/v1/rules", json=NAN_STOP), 403)
        with server.client(headers={"authorization": "Bearer admin-secret"}) as admin:
            rule = add_rule(admin, **NAN_STOP)
            assert anonymous.get("/api/v1/rules").json()[0]["id"] == rule["id"]  # reads are open
            assert_error(trainer.delete(f"/api/v1/rules/{rule['id']}", headers=JSON), 403)
            assert_error(anonymous.delete(f"/api/v1/rules/{rule['id']}", headers=JSON), 401)
            assert admin.delete(f"/api/v1/rules/{rule['id']}", headers=JSON).status_code == 204


def test_a_threshold_rule_notifies_the_webhook(start_server, receiver):
    hook = receiver()
    server = start_server(webhook_url=hook.url)
    with server.client() as api:
        create_run(api, "r")
        rule = add_rule(api, when={"scope": "epoch", "name": "val_accuracy", "op": "above", "value": 0.95}, notify=True)
        post_logs(api, "r", [record(i, v, "epoch", "val_accuracy") for i, v in enumerate([0.5, 0.96, 0.97])])
        wait_for(lambda: hook.bodies, what="the webhook")
        body = hook.bodies[0]
        assert {k: body[k] for k in ("rule", "run", "step", "value", "command")} == {
            "rule": rule["id"],
            "run": "r",
            "step": 1,
            "value": 0.96,
            "command": None,
        }
        assert "val_accuracy" in body["text"]
        wait_for(lambda: api.get(f"/api/v1/rules/{rule['id']}").json()["notified_at"], what="the outcome")
        assert len(hook.bodies) == 1


def test_a_failing_webhook_is_retried_and_then_shown_on_the_rule(start_server, receiver):
    flaky = receiver(statuses=[500, 503])
    server = start_server(webhook_url=flaky.url)
    with server.client() as api:
        create_run(api, "r")
        rule = add_rule(api, run_id="r", **NAN_STOP, notify=True)
        post_logs(api, "r", [record(0, "NaN")])
        wait_for(lambda: api.get(f"/api/v1/rules/{rule['id']}").json()["notified_at"], 30, "the third try")
        assert len(flaky.bodies) == 3 and flaky.bodies[0] == flaky.bodies[2]
        assert api.get(f"/api/v1/rules/{rule['id']}").json()["notify_error"] is None

    refusing = receiver(statuses=[404])
    server = start_server(webhook_url=refusing.url)
    with server.client() as api:
        create_run(api, "s")
        rule = add_rule(api, run_id="s", **NAN_STOP, notify=True)
        post_logs(api, "s", [record(0, "NaN")])
        shown = wait_for(lambda: api.get(f"/api/v1/rules/{rule['id']}").json()["notify_error"], what="the error")
        assert shown == "HTTP 404 from the webhook" and len(refusing.bodies) == 1  # a 4xx is not retried


def test_a_webhook_that_hangs_never_holds_up_ingest(start_server, receiver):
    stuck = receiver(hold=True)
    server = start_server(webhook_url=stuck.url)
    with server.client() as api:
        create_run(api, "r")
        add_rule(api, **{**NAN_STOP, "once_per_run": False}, notify=True)
        for i in range(0, 12, 2):  # each post turns the loss NaN again: six firings
            answer = post_logs(api, "r", [record(i, 1.0), record(i + 1, "NaN")])
            assert answer.status_code == 200
        assert len(firings(api, "r")) == 6
        assert len(stuck.bodies) == 1  # the first webhook still has no answer
        stuck.release.set()
        wait_for(lambda: len(stuck.bodies) == 6, what="the queued webhooks")


@needs_postgres  # several server processes share one PostgreSQL database
def test_a_rule_fires_once_across_two_server_processes(pg_database):
    from tests.support.databases import clean_postgres

    clean_postgres(pg_database)
    first, second = ServerProcess(pg_database).start(), ServerProcess(pg_database).start()
    try:
        with httpx.Client(base_url=first.url, timeout=30) as a, httpx.Client(base_url=second.url, timeout=30) as b:
            runs = [f"r{i}" for i in range(8)]
            for run_id in runs:
                create_run(a, run_id, project="p")
            rule = add_rule(a, project="p", **NAN_STOP)  # made on one, judged on the other at once
            # Both processes take NaN points of every run at the same time, retries included.
            posts = [
                (api, run_id, [record(seq, "Infinity" if seq % 2 else "NaN")])
                for run_id in runs
                for seq in range(6)
                for api in (a, b)
            ]
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda p: post_logs(*p).status_code, posts))
            assert set(answers) == {200}
            for run_id in runs:
                fired = firings(b, run_id)
                assert len(fired) == 1 and fired[0]["rule_id"] == rule["id"]
                assert [c["issued_by"] for c in a.get(f"/api/v1/runs/{run_id}/commands").json()] == [
                    f"rule:{rule['id']}"
                ]
    finally:
        first.stop()
        second.stop()
