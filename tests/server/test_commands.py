"""Commands: validation, delivery (poll, long-poll, log answers), ack and cancel."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from sqlalchemy import event

from monitor_server.config import Settings
from monitor_server.infra.bus import command_topic
from monitor_server.infra.db import writing
from monitor_server.infra.pgbus import libpq_url
from monitor_server.store.commands import deliver_many
from monitor_server.store.runs import get_run_row
from tests.support.api import JSON, TRAINING, assert_error, create_run
from tests.support.databases import clean_postgres, needs_postgres
from tests.support.servers import serve
from tests.support.waiting import wait_for


def issue(api, run_id="r", type_="stop_training", args=None):
    body = {"type": type_} if args is None else {"type": type_, "args": args}
    return api.post(f"/api/v1/runs/{run_id}/commands", json=body)


def test_issue_poll_ack_cycle(api):
    create_run(api, "r")
    command = issue(api, "r", "set_lr", {"value": 0.01})
    assert command.status_code == 201
    command = command.json()
    assert (command["status"], command["args"], command["delivered_at"]) == ("pending", {"value": 0.01}, None)
    polled = api.get("/api/v1/runs/r/commands", params={"status": "pending"}, headers=TRAINING).json()
    assert [(c["id"], c["status"]) for c in polled] == [(command["id"], "delivered")]
    acked = api.post(
        f"/api/v1/runs/r/commands/{command['id']}/ack",
        json={"status": "applied", "message": "lr 0.1 -> 0.01", "step": 42},
    )
    assert acked.status_code == 200
    assert (acked.json()["status"], acked.json()["step"], acked.json()["message"]) == ("applied", 42, "lr 0.1 -> 0.01")
    assert acked.json()["done_at"] is not None
    assert api.get("/api/v1/runs/r/commands", params={"status": "pending"}, headers=TRAINING).json() == []
    assert [c["status"] for c in api.get("/api/v1/runs/r/commands").json()] == ["applied"]


def test_ack_is_idempotent(api):
    create_run(api, "r")
    command = issue(api).json()
    first = api.post(
        f"/api/v1/runs/r/commands/{command['id']}/ack", json={"status": "failed", "message": "schedule"}
    ).json()
    again = api.post(f"/api/v1/runs/r/commands/{command['id']}/ack", json={"status": "applied"}).json()
    assert again == first and again["status"] == "failed"


def test_listing_without_status_does_not_deliver(api):
    create_run(api, "r")
    issue(api)
    assert [c["status"] for c in api.get("/api/v1/runs/r/commands").json()] == ["pending"]


def test_cancel_of_a_pending_command_is_immediate(api):
    create_run(api, "r")
    pending = issue(api).json()
    answer = api.post(f"/api/v1/runs/r/commands/{pending['id']}/cancel", headers=JSON)
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    again = api.post(f"/api/v1/runs/r/commands/{pending['id']}/cancel", headers=JSON)
    assert again.status_code == 200 and again.json() == answer.json()
    assert api.get("/api/v1/runs/r/commands", params={"status": "pending"}, headers=TRAINING).json() == []


def test_cancel_of_a_delivered_command_asks_the_training_which_says_what_it_did(api):
    create_run(api, "r")
    withdrawn, raced = issue(api).json(), issue(api).json()
    api.get("/api/v1/runs/r/commands", params={"status": "pending"}, headers=TRAINING)  # the training has both
    for command in (withdrawn, raced):
        answer = api.post(f"/api/v1/runs/r/commands/{command['id']}/cancel", headers=JSON)
        assert answer.status_code == 202
        assert answer.json()["status"] == "delivered" and answer.json()["cancel_requested_at"] is not None
    polled = api.get("/api/v1/runs/r/commands", params={"status": "pending"}, headers=TRAINING).json()
    assert [c["cancel_requested_at"] is not None for c in polled] == [True, True]

    # One was still waiting in the training: withdrawn. The other was applied first: it stays applied.
    ack = f"/api/v1/runs/r/commands/{withdrawn['id']}/ack"
    assert api.post(ack, json={"status": "cancelled", "message": "withdrawn"}).json()["status"] == "cancelled"
    applied = api.post(f"/api/v1/runs/r/commands/{raced['id']}/ack", json={"status": "applied", "step": 9}).json()
    assert (applied["status"], applied["step"]) == ("applied", 9)
    assert_error(api.post(f"/api/v1/runs/r/commands/{raced['id']}/cancel", headers=JSON), 409)
    assert api.get("/api/v1/runs/r/commands", params={"status": "pending"}, headers=TRAINING).json() == []


@needs_postgres
def test_a_cancel_waits_for_a_log_post_holding_the_run_and_finds_the_command_handed_over(pg_database):
    """A log post reads the commands to hand over under its run's lock, and marks them
    delivered. A cancel takes the same lock first: it finds the command delivered and asks
    the training to withdraw it (202), instead of cancelling what the training now holds."""
    clean_postgres(pg_database)
    with serve(Settings(database_url=pg_database)) as server, server.client() as api:
        create_run(api, "r")
        command = issue(api, "r", "checkpoint").json()
        answer = {}

        def cancel() -> None:
            with server.client() as other:
                answer["cancel"] = other.post(f"/api/v1/runs/r/commands/{command['id']}/cancel", headers=JSON)

        with writing(server.app.state.engine) as conn:  # a log post's transaction, held open
            get_run_row(conn, "r", lock=True)
            assert [c.id for c in deliver_many(conn, ["r"], time.time())["r"][1]] == [command["id"]]
            canceller = threading.Thread(target=cancel)
            canceller.start()
            with psycopg.connect(libpq_url(pg_database), autocommit=True) as admin:
                waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
                wait_for(lambda: admin.execute(waiting).fetchone()[0] == 1, what="the cancel waiting on a lock")
        canceller.join(30)
        assert answer["cancel"].status_code == 202, answer["cancel"].text
        assert answer["cancel"].json()["status"] == "delivered" and answer["cancel"].json()["cancel_requested_at"]


def test_an_ack_after_a_cancel_records_what_the_training_did(api):
    create_run(api, "r")
    command = issue(api).json()
    api.post(f"/api/v1/runs/r/commands/{command['id']}/cancel", headers=JSON)
    acked = api.post(
        f"/api/v1/runs/r/commands/{command['id']}/ack", json={"status": "applied", "message": "lr 0.1 -> 0.2"}
    )
    assert acked.status_code == 200
    assert acked.json()["status"] == "applied"
    assert acked.json()["message"].startswith("lr 0.1 -> 0.2 (after it was cancelled")


def test_ending_a_run_cancels_what_it_never_applied(api):
    create_run(api, "r")
    pending, delivered, applied = issue(api).json(), issue(api).json(), issue(api).json()
    api.get("/api/v1/runs/r/commands", params={"status": "pending"}, headers=TRAINING)
    api.post(f"/api/v1/runs/r/commands/{applied['id']}/ack", json={"status": "applied"})
    api.get("/api/v1/runs/r/commands", params={"status": "pending"}, headers=TRAINING)
    api.patch("/api/v1/runs/r", json={"status": "finished", "reason": "all 3 epochs done"})
    stored = {c["id"]: c for c in api.get("/api/v1/runs/r/commands").json()}
    for command in (pending, delivered):
        assert stored[command["id"]]["status"] == "cancelled"
        assert (
            stored[command["id"]]["message"] == "not applied: the run ended (finished) before the training applied it"
        )
    assert stored[applied["id"]]["status"] == "applied"
    # A process that resumes the run is not handed them again.
    api.patch("/api/v1/runs/r", json={"status": "running"})
    assert api.get("/api/v1/runs/r/commands", params={"status": "pending"}, headers=TRAINING).json() == []


def test_long_poll_returns_when_a_command_arrives(api, server):
    create_run(api, "r")
    got: dict = {}

    def poll() -> None:
        with server.client() as client:
            got["commands"] = client.get(
                "/api/v1/runs/r/commands", params={"status": "pending", "wait": 30}, headers=TRAINING
            ).json()

    thread = threading.Thread(target=poll)
    thread.start()
    # The poll listens before it reads, so a command issued once it listens reaches it.
    wait_for(lambda: server.app.state.bus.has_subscribers(command_topic("r")), what="the poll")
    command = issue(api).json()
    thread.join(20)
    assert not thread.is_alive(), "the command did not end the long-poll"
    assert [c["id"] for c in got["commands"]] == [command["id"]]


def test_long_poll_times_out_empty(api):
    create_run(api, "r")
    start = time.monotonic()
    assert api.get("/api/v1/runs/r/commands", params={"status": "pending", "wait": 0.5}, headers=TRAINING).json() == []
    assert time.monotonic() - start >= 0.45  # it waited before answering empty


def test_poll_counts_as_contact(start_server):
    """A poll records contact once the last is a sixth of `stale_after` old: often enough
    that a waiting training never reads interrupted, rarely enough to stay off the write lock."""
    server = start_server(stale_after=1.2)
    with server.client() as api:
        before = create_run(api, "r")["last_seen"]
        time.sleep(0.25)
        api.get("/api/v1/runs/r/commands", params={"status": "pending"}, headers=TRAINING)
        assert api.get("/api/v1/runs/r").json()["last_seen"] > before


def test_polls_with_nothing_to_hand_over_do_not_write(api, server):
    """Trainings waiting for commands read; only a delivery (or a due heartbeat) writes, so
    polls do not queue for the write lock behind log posts."""
    create_run(api, "r")
    statements: list[str] = []
    engine = server.app.state.engine
    record = lambda *args: statements.append(args[2].lstrip().upper())  # noqa: E731
    event.listen(engine, "before_cursor_execute", record)
    try:
        for _ in range(10):
            assert (
                api.get("/api/v1/runs/r/commands", params={"status": "pending", "wait": 0}, headers=TRAINING).json()
                == []
            )
        idle, statements[:] = list(statements), []
        command = issue(api).json()
        delivered = api.get("/api/v1/runs/r/commands", params={"status": "pending", "wait": 0}, headers=TRAINING).json()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    writes = ("INSERT", "UPDATE", "DELETE", "BEGIN IMMEDIATE")
    assert idle and not [s for s in idle if s.startswith(writes) or "FOR UPDATE" in s], idle
    assert [c["id"] for c in delivered] == [command["id"]] and delivered[0]["status"] == "delivered"
    assert any(s.startswith("UPDATE COMMANDS") for s in statements)


@pytest.mark.parametrize(
    "body",
    [
        {"type": "explode"},
        {"type": "set_lr"},
        {"type": "set_lr", "args": {"value": 0}},
        {"type": "set_lr", "args": {"value": -0.1}},
        {"type": "set_lr", "args": {"value": "0.1"}},
        {"type": "set_lr", "args": {"value": 11}},
        {"type": "set_lr", "args": {"value": 0.1, "extra": 1}},
        {"type": "stop_training", "args": {"now": True}},
        {"args": {}},
        {"type": "set_lr", "args": {"value": 0.1, "factor": 2}},
        {"type": "set_lr", "args": {"factor": 0}},
        {"type": "set_lr", "args": {"factor": 1001}},
        {"type": "set_param", "args": {"name": "beta"}},
        {"type": "set_param", "args": {"name": "beta", "value": "0.5"}},
        {"type": "set_param", "args": {"name": "", "value": 0.5}},
        {"type": "set_param", "args": {"name": "learning_rate", "value": 0}},
        {"type": "set_param", "args": {"name": "learning_rate", "value": 11}},
        {"type": "pause", "args": {"timeout": 0}},
        {"type": "pause", "args": {"timeout": -5}},
        {"type": "resume", "args": {"now": True}},
        {"type": "checkpoint", "args": {"name": "../up"}},
        {"type": "checkpoint", "args": {"name": "a b"}},
        {"type": "action", "args": {}},
        {"type": "stop_training", "at": {"step": -1}},
        {"type": "stop_training", "at": {"step": 3, "epoch": 1}},
        {"type": "stop_training", "at": {"minute": 3}},
        {"type": "stop_training", "at": {"step": 2.5}},
        {"type": "resume", "at": {"step": 5}},
    ],
)
def test_bad_commands_are_422(api, body):
    create_run(api, "r")
    assert_error(api.post("/api/v1/runs/r/commands", json=body), 422)
    assert api.get("/api/v1/runs/r/commands").json() == []


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
@pytest.mark.parametrize("args", [b'{"value": %s}', b'{"factor": %s}', b'{"name": "beta", "value": %s}'])
def test_values_must_be_finite(api, token, args):
    create_run(api, "r")
    type_ = b"set_param" if b"name" in args else b"set_lr"
    body = b'{"type": "' + type_ + b'", "args": ' + args % token + b"}"
    assert_error(api.post("/api/v1/runs/r/commands", content=body, headers=JSON), 422)


def test_every_command_type_is_stored_as_sent_with_its_schedule(api):
    create_run(api, "r")
    bodies = [
        {"type": "stop_training"},
        {"type": "set_lr", "args": {"factor": 0.5}, "at": {"epoch": 3}},
        {"type": "set_param", "args": {"name": "kl_weight", "value": 0.2}},
        {"type": "pause", "args": {"timeout": 30}},
        {"type": "resume"},
        {"type": "checkpoint", "args": {"name": "best-1.0"}},
        {"type": "checkpoint"},
        {"type": "action", "args": {"name": "dump_samples"}, "at": {"step": 700}},
    ]
    for body in bodies:
        assert issue_body(api, "r", body).status_code == 201
    stored = api.get("/api/v1/runs/r/commands").json()
    expected = [(b["type"], {k: float(v) if isinstance(v, int) else v for k, v in b.get("args", {}).items()}, b.get("at"))
                for b in bodies]  # fmt: skip
    expected[1][1]["at_most"] = 10.0  # a factor carries the server's limit
    assert [(c["type"], c["args"], c["at"]) for c in stored] == expected


def test_a_factor_carries_the_servers_limit_to_the_training(api):
    create_run(api, "r")
    command = issue_body(api, "r", {"type": "set_lr", "args": {"factor": 2}}).json()
    assert command["args"] == {"factor": 2.0, "at_most": 10.0}


def test_controls_are_kept_whole_when_a_client_sends_part_of_them(api):
    create_run(api, "r")
    api.patch("/api/v1/runs/r", json={"controls": {"actions": ["sample"]}}).raise_for_status()
    assert api.get("/api/v1/runs/r").json()["controls"] == {"params": {}, "actions": ["sample"], "checkpoint_dir": None}


def issue_body(api, run_id: str, body: dict):
    return api.post(f"/api/v1/runs/{run_id}/commands", json=body)


def test_a_paused_run_takes_commands_and_reads_paused_until_it_falls_silent(start_server):
    server = start_server(stale_after=2.0)
    with server.client() as api:
        create_run(api, "r")
        api.patch("/api/v1/runs/r", json={"status": "paused"})
        assert api.get("/api/v1/runs/r").json()["status"] == "paused"
        assert [r["id"] for r in api.get("/api/v1/runs", params={"status": "paused"}).json()] == ["r"]
        assert issue_body(api, "r", {"type": "resume"}).status_code == 201
        assert api.get("/api/v1/runs/r/commands").json()[0]["status"] == "pending"  # pausing ended nothing
        time.sleep(2.4)
        assert api.get("/api/v1/runs/r").json()["status"] == "interrupted"  # no poll kept it alive


@pytest.mark.parametrize(
    "body",
    [
        {"type": "stop_training"},
        {"type": "stop_training", "runs": [], "args": {}},
        {"type": "stop_training", "runs": ["a"], "project": "p"},
        {"type": "stop_training", "runs": None, "project": "p"},
        {"type": "stop_training", "runs": ["not an id!"]},
        {"type": "set_lr", "args": {"value": 99}, "project": "p"},
    ],
)
def test_bad_commands_for_several_runs_are_422(api, body):
    assert_error(api.post("/api/v1/commands", json=body), 422)


def test_commands_need_a_running_run(api):
    assert_error(issue(api, "nope"), 404)
    create_run(api, "r")
    api.patch("/api/v1/runs/r", json={"status": "finished"})
    assert_error(issue(api, "r"), 409)


def test_bad_ack_and_unknown_command(api):
    create_run(api, "r")
    command = issue(api).json()
    assert_error(api.post(f"/api/v1/runs/r/commands/{command['id']}/ack", json={"status": "done"}), 422)
    assert_error(api.post("/api/v1/runs/r/commands/999/ack", json={"status": "applied"}), 404)
    assert_error(api.post("/api/v1/runs/r/commands/999/cancel", headers=JSON), 404)
    assert_error(api.post("/api/v1/runs/r/commands/abc/cancel", headers=JSON), 422)
    create_run(api, "other")
    assert_error(api.post(f"/api/v1/runs/other/commands/{command['id']}/ack", json={"status": "applied"}), 404)
    assert_error(api.get("/api/v1/runs/r/commands", params={"status": "applied"}), 422)
    assert_error(api.get("/api/v1/runs/r/commands", params={"status": "pending", "wait": 31}, headers=TRAINING), 422)


def long_poll(api, wait: float):
    """A training's long-poll for its pending commands, on a thread of its own; its answer,
    which must come within 20 s."""
    got = {}
    poll = threading.Thread(
        target=lambda: got.update(
            r=api.get("/api/v1/runs/r/commands", params={"status": "pending", "wait": wait}, headers=TRAINING)
        )
    )
    poll.start()
    poll.join(20)
    assert not poll.is_alive(), "the poll is still waiting"
    return got["r"]


def test_a_long_poll_answers_at_once_for_a_cancel_asked_between_two_polls(api, server):
    create_run(api, "r")
    command = issue(api).json()
    api.get("/api/v1/runs/r/commands", params={"status": "pending"}, headers=TRAINING)  # the training has it
    api.post(f"/api/v1/runs/r/commands/{command['id']}/cancel", headers=JSON)  # no poll is waiting
    [held] = long_poll(api, wait=30).json()  # answered at once, not after its 30 s
    assert held["id"] == command["id"] and held["cancel_requested_at"] is not None


def test_a_long_poll_does_not_answer_early_for_commands_the_training_holds_already(api, server):
    create_run(api, "r")
    command = api.post("/api/v1/runs/r/commands", json={"type": "stop_training", "at": {"step": 100}}).json()
    # Delivered, held by the training.
    api.get("/api/v1/runs/r/commands", params={"status": "pending"}, headers=TRAINING)
    answer = long_poll(api, wait=1)
    # It waited its second out (no busy polling for a held command), then answered with it.
    assert answer.elapsed.total_seconds() >= 0.9
    assert [c["id"] for c in answer.json()] == [command["id"]]


CONTROLS = {"params": {"learning_rate": 0.01, "kl_weight": 1.0}, "actions": ["sample"], "checkpoint_dir": "/tmp/c"}


def with_controls(api, run_id: str, controls: dict | None = CONTROLS) -> None:
    create_run(api, run_id)
    if controls is not None:
        api.patch(f"/api/v1/runs/{run_id}", json={"controls": controls}).raise_for_status()


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"type": "set_param", "args": {"name": "momentum", "value": 0.9}}, "learning_rate, kl_weight"),
        ({"type": "action", "args": {"name": "dump"}}, "sample"),
    ],
    ids=["set_param", "action"],
)
def test_a_name_the_runs_controls_do_not_have_is_refused_with_the_names_it_has(api, body, names):
    with_controls(api, "r")
    detail = assert_error(issue_body(api, "r", body), 422)
    assert detail.endswith(f"{body['args']['name']!r}; it has: {names}"), detail
    assert api.get("/api/v1/runs/r/commands").json() == []


@pytest.mark.parametrize(
    ("controls", "body"),
    [
        (CONTROLS, {"type": "set_param", "args": {"name": "kl_weight", "value": 0.5}}),
        (CONTROLS, {"type": "set_param", "args": {"name": "learning_rate", "value": 0.5}}),
        (CONTROLS, {"type": "action", "args": {"name": "sample"}}),
        (
            {"params": {}, "optimizers": [{"name": "d_optimizer"}, {"name": "g_optimizer"}]},
            {"type": "set_param", "args": {"name": "learning_rate", "value": 0.5, "optimizer": 1}},
        ),
        (None, {"type": "set_param", "args": {"name": "momentum", "value": 0.9}}),
        (None, {"type": "action", "args": {"name": "dump"}}),
    ],
    ids=["knob", "learning_rate", "action", "several-optimizers", "no-controls-param", "no-controls-action"],
)
def test_names_the_controls_list_or_runs_without_controls_take_the_command(api, controls, body):
    with_controls(api, "r", controls)
    assert issue_body(api, "r", body).status_code == 201


def test_commands_for_several_runs_skip_runs_whose_controls_lack_the_name(api):
    with_controls(api, "a")
    with_controls(api, "b", {"params": {"beta": 0.5}, "actions": []})
    with_controls(api, "c", None)
    body = {"runs": ["a", "b", "c"], "type": "set_param", "args": {"name": "beta", "value": 0.1}}
    answer = api.post("/api/v1/commands", json=body)
    assert answer.status_code == 201
    assert [c["run_id"] for c in answer.json()["commands"]] == ["b", "c"]
    assert answer.json()["skipped"] == [
        {"run_id": "a", "reason": "the run has no param 'beta'; it has: learning_rate, kl_weight"}
    ]
