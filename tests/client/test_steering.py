"""Steering v2 in a real `model.fit` (TensorFlow) against a real server: set_param, set_lr
by a factor, pause and resume, checkpoint, actions, scheduled commands, and what the run
reports as steerable. Each effect is observed on the model, not only in the ack."""

from __future__ import annotations

import math
import threading
import time

import keras
import numpy as np
import pytest

from client_callbacks import RemoteCallback
from client_callbacks.handlers import Context, Refused, action, checkpoint, set_param
from tests.support.api import batch_steps, records
from tests.support.training import STEPS, AtStep, fit, send_and_wait, tiny_model
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # real Keras fits, in this process and as programs

JSON = {"content-type": "application/json"}


def the_command(api, run_id: str, command_id: int) -> dict:
    return next(c for c in api.get(f"/api/v1/runs/{run_id}/commands").json() if c["id"] == command_id)


def scaled_loss_model(knob: keras.Variable) -> keras.Model:
    """The tiny model with its loss multiplied by `knob`: a knob of 0 makes every loss 0."""
    model = tiny_model()

    def loss(y_true, y_pred):
        return knob * keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)

    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
    return model


def batch_losses(api, run_id: str) -> dict[int, float]:
    return {
        r["step"]: r["metrics"]["loss"]
        for r in records(api, run_id)
        if r["scope"] == "batch" and "loss" in r["metrics"]
    }


def test_set_param_sets_a_knob_the_loss_reads_and_the_compiled_step_uses_it(server, api, spool_dir):
    knob = keras.Variable(1.0, trainable=False, name="loss_weight")
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir, knobs={"loss_weight": knob})
    sent = {}
    # Scheduled at the first batch of epoch 1, so that all of epoch 1 runs with the new value.
    at_epoch_1 = {"type": "set_param", "args": {"name": "loss_weight", "value": 0}, "at": {"epoch": 1}}
    fit(
        [AtStep({2: lambda s: sent.update(send_and_wait(api, cb, at_epoch_1))}), cb],
        epochs=2,
        model=scaled_loss_model(knob),
    )

    assert float(knob.numpy()) == 0.0
    command = the_command(api, cb.run_id, sent["id"])
    assert (command["status"], command["step"]) == ("applied", STEPS)
    assert command["message"] == f"loss_weight 1 -> 0 at step {STEPS}"
    losses = batch_losses(api, cb.run_id)
    assert all(losses[s] > 0 for s in range(STEPS)) and all(losses[s] == 0 for s in range(STEPS, 2 * STEPS))
    assert api.get(f"/api/v1/runs/{cb.run_id}").json()["controls"]["params"]["loss_weight"] == 0.0


def send_once_controls_are_known(api, cb, command: dict, answers: list) -> None:
    """Issue a command once the run shows the controls the training reported."""
    wait_for(lambda: api.get(f"/api/v1/runs/{cb.run_id}").json().get("controls"), what="the run's controls")
    answers.append(api.post(f"/api/v1/runs/{cb.run_id}/commands", json=command))


def test_set_param_of_an_unknown_name_is_refused_and_lists_what_can_be_set(server, api, spool_dir):
    knob = keras.Variable(0.5, trainable=False)
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir, knobs={"dropout_rate": knob})
    answers = []
    bad = {"type": "set_param", "args": {"name": "momentum", "value": 0.9}}
    fit([AtStep({1: lambda s: send_once_controls_are_known(api, cb, bad, answers)}), cb], epochs=1)
    [answer] = answers
    assert answer.status_code == 422
    assert answer.json()["detail"] == f"run {cb.run_id!r} has no param 'momentum'; it has: learning_rate, dropout_rate"
    assert api.get(f"/api/v1/runs/{cb.run_id}/commands").json() == []
    # One issued before the training reported its controls fails there, naming them too.
    with pytest.raises(Refused) as refused:
        set_param(Context(cb.steering, 1, {}), bad["args"])
    assert str(refused.value) == "no settable param 'momentum'; settable: learning_rate, dropout_rate"
    assert float(knob.numpy()) == 0.5


def test_set_param_learning_rate_and_set_lr_by_a_factor(server, api, spool_dir):
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir)
    model = tiny_model(keras.optimizers.SGD(0.01))
    plan = {
        2: lambda s: send_and_wait(api, cb, {"type": "set_param", "args": {"name": "learning_rate", "value": 0.04}}),
        5: lambda s: send_and_wait(api, cb, {"type": "set_lr", "args": {"factor": 0.5}}),
    }
    fit([AtStep(plan), cb], epochs=1, model=model)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.02)
    lr = api.get(f"/api/v1/runs/{cb.run_id}/series/batch/lr").json()
    assert (lr["steps"], lr["values"]) == ([0, 2, 5], [0.01, 0.04, 0.02])
    messages = [c["message"] for c in api.get(f"/api/v1/runs/{cb.run_id}/commands").json()]
    assert messages == ["learning rate 0.01 -> 0.04 at step 2", "learning rate 0.04 -> 0.02 at step 5"]


def test_set_lr_by_a_factor_on_a_schedule_fails(server, api, spool_dir):
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.9)
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir)
    sent = {}
    factor = {"type": "set_lr", "args": {"factor": 2.0}}
    fit([AtStep({2: lambda s: sent.update(send_and_wait(api, cb, factor))}), cb], epochs=1,
        model=tiny_model(keras.optimizers.SGD(schedule)))  # fmt: skip
    command = the_command(api, cb.run_id, sent["id"])
    assert (command["status"], command["message"]) == (
        "failed",
        "the learning rate is an ExponentialDecay, a schedule; it cannot be set",
    )
    assert "learning_rate" not in api.get(f"/api/v1/runs/{cb.run_id}").json()["controls"]["params"]


class Pauser(threading.Thread):
    """From outside the training (as a person would): watch the run while it is paused,
    then resume it (or stop it)."""

    def __init__(self, api, run_id: str, hold: float, then: dict) -> None:
        super().__init__(daemon=True)
        self.api, self.run_id, self.hold, self.then = api, run_id, hold, then
        self.statuses: list[str] = []
        self.points: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            paused = lambda: self.api.get(f"/api/v1/runs/{self.run_id}").json().get("status") == "paused"  # noqa: E731
            wait_for(paused, 180, "the run to be paused")
            deadline = time.monotonic() + self.hold
            while time.monotonic() < deadline:  # hold it at least this long, looking every 0.2 s
                self.statuses.append(self.api.get(f"/api/v1/runs/{self.run_id}").json()["status"])
                self.points.append(len(batch_steps(self.api, self.run_id)))
                time.sleep(0.2)
            self.api.post(f"/api/v1/runs/{self.run_id}/commands", json=self.then).raise_for_status()
        except BaseException as exc:
            self.error = exc


def test_pause_holds_the_training_with_little_cpu_and_no_new_points_until_resume(start_server, spool_dir):
    # Stale after 1.5 s: only the polls' heartbeat keeps a paused run from reading interrupted.
    server = start_server(stale_after=1.5)
    with server.client() as api:
        cb = RemoteCallback(url=server.url, spool_dir=spool_dir, flush_interval=0.05)
        pauser = Pauser(api, cb.run_id, hold=3.0, then={"type": "resume"})
        cpu = {}

        def pause(step):
            send_and_wait(api, cb, {"type": "pause"})
            pauser.start()
            cpu["before"] = time.thread_time()

        fit([AtStep({3: pause, 4: lambda s: cpu.update(after=time.thread_time())}), cb], epochs=2)
        pauser.join(30)
        assert pauser.error is None, pauser.error
        assert set(pauser.statuses) == {"paused"} and len(pauser.statuses) >= 10
        assert len(set(pauser.points)) == 1  # no point arrived while paused
        # The training thread waited, it did not spin: well under a second of CPU in 3 s or more.
        assert cpu["after"] - cpu["before"] < 0.5
        assert batch_steps(api, cb.run_id) == list(range(2 * STEPS))  # then it went on, every batch once
        pause, resume = api.get(f"/api/v1/runs/{cb.run_id}/commands").json()
        assert (pause["status"], pause["step"], pause["message"]) == ("applied", 3, "paused at step 3")
        assert (resume["status"], resume["step"], resume["message"]) == ("applied", 3, "resumed at step 3")
        assert api.get(f"/api/v1/runs/{cb.run_id}").json()["status"] == "finished"


def test_stop_while_paused_stops(server, api, spool_dir):
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir)
    pauser = Pauser(api, cb.run_id, hold=0.2, then={"type": "stop_training"})

    def pause(step):
        send_and_wait(api, cb, {"type": "pause"})
        pauser.start()

    fit([AtStep({3: pause}), cb], epochs=3)
    pauser.join(30)
    assert batch_steps(api, cb.run_id) == [0, 1, 2, 3]
    run = api.get(f"/api/v1/runs/{cb.run_id}").json()
    assert run["status"] == "stopped" and run["reason"].endswith("stopped after step 3")


def test_a_pause_with_a_timeout_resumes_by_itself(server, api, spool_dir):
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir)
    sent = {}
    pause = {"type": "pause", "args": {"timeout": 0.5}}
    fit([AtStep({2: lambda s: sent.update(send_and_wait(api, cb, pause))}), cb], epochs=1)
    assert batch_steps(api, cb.run_id) == list(range(STEPS))
    command = the_command(api, cb.run_id, sent["id"])
    assert command["message"] == "paused at step 2; resumes by itself after 0.5 s"
    assert api.get(f"/api/v1/runs/{cb.run_id}").json()["status"] == "finished"


def test_checkpoint_saves_a_model_that_loads_with_the_weights_of_that_step(server, api, spool_dir, tmp_path):
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir, checkpoint_dir=tmp_path / "ckpt")
    model = tiny_model()
    weights = {}

    def checkpoint_now(step):
        weights["at3"] = [w.copy() for w in model.get_weights()]  # this batch edge, before step 3
        send_and_wait(api, cb, {"type": "checkpoint"})

    plan = {
        3: checkpoint_now,
        4: lambda s: weights.update(at4=[w.copy() for w in model.get_weights()]),  # after step 3 ran
        6: lambda s: send_and_wait(api, cb, {"type": "checkpoint", "args": {"name": "best.v2"}}),
    }
    fit([AtStep(plan), cb], epochs=1, model=model)
    first, named = api.get(f"/api/v1/runs/{cb.run_id}/commands").json()
    folder = (tmp_path / "ckpt").resolve()
    assert first["status"] == "applied" and first["message"] == f"saved {folder / 'step-3.keras'} at step 3"
    assert named["status"] == "applied" and (folder / "best.v2.keras").exists()
    loaded = keras.models.load_model(folder / "step-3.keras", compile=False)
    # Saved at the edge before step 3: the weights after steps 0..2, which step 3 then changed.
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), weights["at3"], strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), weights["at4"], strict=True))
    assert api.get(f"/api/v1/runs/{cb.run_id}").json()["controls"]["checkpoint_dir"] == str(folder)


def test_a_checkpoint_name_that_is_a_path_is_refused_by_the_server_and_by_the_client(server, api, spool_dir, tmp_path):
    from tests.support.api import assert_error, create_run

    create_run(api, "r")
    for name in ("../evil", "a/b", "x" * 65, ""):
        assert_error(api.post("/api/v1/runs/r/commands", json={"type": "checkpoint", "args": {"name": name}}), 422)
    # The client does not trust the server either.
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir, checkpoint_dir=tmp_path / "ckpt")
    for name in ("../evil", "/etc/passwd", "a/../../b"):
        with pytest.raises(Refused, match="not a checkpoint name"):
            checkpoint(Context(cb.steering, 0, 1), {"name": name})
    assert not (tmp_path / "evil.keras").exists() and not (tmp_path / "ckpt").exists()


def test_an_action_is_called_once_with_the_model_and_its_message_or_error_is_the_ack(server, api, spool_dir):
    calls = []

    def sample(model, step):
        calls.append((model, step))
        return f"sampled {len(model.layers)} layers at step {step}"

    def broken(model, step):
        raise RuntimeError("disk full")

    def mute(model, step):
        raise RuntimeError()

    actions = {"sample": sample, "broken": broken, "mute": mute}
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir, actions=actions)
    model = tiny_model()
    answers = []
    plan = {
        2: lambda s: send_and_wait(api, cb, {"type": "action", "args": {"name": "broken"}}),
        3: lambda s: send_and_wait(api, cb, {"type": "action", "args": {"name": "mute"}}),
        4: lambda s: send_and_wait(api, cb, {"type": "action", "args": {"name": "sample"}}),
        6: lambda s: send_once_controls_are_known(api, cb, {"type": "action", "args": {"name": "nope"}}, answers),
    }
    fit([AtStep(plan), cb], epochs=1, model=model)
    assert calls == [(model, 4)]
    broke, muted, sampled = api.get(f"/api/v1/runs/{cb.run_id}/commands").json()
    assert (broke["status"], broke["message"]) == ("failed", "RuntimeError: disk full")
    assert (muted["status"], muted["message"]) == ("failed", "RuntimeError")
    assert (sampled["status"], sampled["message"]) == ("applied", "sampled 2 layers at step 4")
    assert answers[0].status_code == 422
    assert answers[0].json()["detail"] == f"run {cb.run_id!r} has no action 'nope'; it has: broken, mute, sample"
    with pytest.raises(Refused) as refused:
        action(Context(cb.steering, 6, {}), {"name": "nope"})
    assert str(refused.value) == "no action 'nope'; registered: broken, mute, sample"
    assert batch_steps(api, cb.run_id) == list(range(STEPS))  # the training went on
    assert api.get(f"/api/v1/runs/{cb.run_id}").json()["controls"]["actions"] == ["broken", "mute", "sample"]


def test_scheduled_commands_apply_exactly_at_their_step_or_epoch(server, api, spool_dir):
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir)
    model = tiny_model(keras.optimizers.SGD(0.01))
    sent = []

    def schedule(step):
        for command in (
            {"type": "set_lr", "args": {"value": 0.03}, "at": {"step": 7}},
            {"type": "set_lr", "args": {"value": 0.05}, "at": {"epoch": 2}},
            {"type": "set_lr", "args": {"value": 0.09}, "at": {"step": 0}},  # already passed
            {"type": "stop_training", "at": {"step": 10_000}},  # never reached
        ):
            sent.append(send_and_wait(api, cb, command))

    fit([AtStep({1: schedule}), cb], epochs=3, model=model)
    at7, at_epoch2, passed, never = (the_command(api, cb.run_id, c["id"]) for c in sent)
    assert (at7["status"], at7["step"]) == ("applied", 7)
    assert (at_epoch2["status"], at_epoch2["step"]) == ("applied", 2 * STEPS)
    assert (
        passed["status"] == "failed"
        and passed["message"] == "not applied: step 0 had passed (the training is at step 1)"
    )
    assert never["status"] == "cancelled"
    assert never["message"] == "not applied: the run ended (finished) before the training applied it at step 10000"
    lr = api.get(f"/api/v1/runs/{cb.run_id}/series/batch/lr").json()
    assert (lr["steps"], lr["values"]) == ([0, 7, 2 * STEPS], [0.01, 0.03, 0.05])


def test_a_scheduled_command_can_be_cancelled_while_the_training_holds_it(server, api, spool_dir):
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir, poll_interval=0.05)
    model = tiny_model(keras.optimizers.SGD(0.01))
    sent = {}

    def schedule_then_cancel(step):
        sent.update(send_and_wait(api, cb, {"type": "set_lr", "args": {"value": 0.5}, "at": {"step": 8}}))
        answer = api.post(f"/api/v1/runs/{cb.run_id}/commands/{sent['id']}/cancel", headers=JSON)
        assert answer.status_code == 202
        wait_for(lambda: the_command(api, cb.run_id, sent["id"])["status"] == "cancelled", what="the withdrawal")

    fit([AtStep({2: schedule_then_cancel}), cb], epochs=1, model=model)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)
    assert the_command(api, cb.run_id, sent["id"])["message"] == "cancelled before the training applied it"


def test_the_run_reports_what_can_be_steered(server, api, spool_dir, tmp_path):
    knob = keras.Variable(0.25, trainable=False)
    cb = RemoteCallback(
        url=server.url, spool_dir=spool_dir, knobs={"beta": knob}, actions={"dump": lambda m, s: None},
        checkpoint_dir=tmp_path / "c",
    )  # fmt: skip
    fit([cb, keras.callbacks.LearningRateScheduler(lambda epoch: 0.01 / (epoch + 1))], epochs=2)
    controls = api.get(f"/api/v1/runs/{cb.run_id}").json()["controls"]
    assert controls == {
        "params": {"learning_rate": 0.005, "beta": 0.25},  # the scheduler's latest rate
        "actions": ["dump"],
        "checkpoint_dir": str((tmp_path / "c").resolve()),
    }
    assert math.isclose(float(knob.numpy()), 0.25)


def test_commands_for_several_runs_at_once(server, api, spool_dir):
    from client_callbacks import MonitorClient

    clients = [
        MonitorClient(url=server.url, project="sweep", spool_dir=spool_dir, poll_interval=0.05) for _ in range(3)
    ]
    for client in clients:
        client.start()
    for client in clients:
        wait_for(lambda c=client: api.get(f"/api/v1/runs/{c.run_id}").status_code == 200, what="the runs")
    clients[2].end("finished")
    assert clients[2].flush(10)
    answer = api.post("/api/v1/commands", json={"project": "sweep", "type": "set_lr", "args": {"factor": 0.5}})
    assert answer.status_code == 201
    created = answer.json()
    assert sorted(c["run_id"] for c in created["commands"]) == sorted(c.run_id for c in clients[:2])
    for client in clients[:2]:
        [taken] = wait_for(client.take_commands, what="the command")
        assert (taken["type"], taken["args"]) == ("set_lr", {"factor": 0.5, "at_most": 10.0})

    ids = [clients[0].run_id, clients[2].run_id, "nope"]
    answer = api.post("/api/v1/commands", json={"runs": ids, "type": "stop_training"}).json()
    assert [c["run_id"] for c in answer["commands"]] == [clients[0].run_id]
    assert answer["skipped"] == [
        {"run_id": clients[2].run_id, "reason": "the run is finished"},
        {"run_id": "nope", "reason": "not found"},
    ]
    for client in clients:
        client.close()


def test_on_jax_set_param_scheduling_and_pause_take_effect(start_server, tmp_path):
    """The same commands on the JAX backend, where a fit keeps the live values outside the
    variables: a scheduled knob change, a scheduled rate and a pause, in a real fit."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    server = start_server(stale_after=1.5)
    at = [
        ("0", {"type": "set_param", "args": {"name": "scale", "value": 0}, "at": {"epoch": 2}}),
        ("3", {"type": "set_lr", "args": {"value": 0.05}, "at": {"step": 9}}),
        ("12", {"type": "pause"}),
    ]
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "tests.support.trainer", server.url, "jax-steer", "--epochs", "3", "--steps", "20"]
    command += [part for step, body in at for part in ("--at", step, json.dumps(body))]
    command += ["--knob", "--report", str(report)]
    env = {**os.environ, "KERAS_BACKEND": "jax", "FITWATCH_SPOOL_DIR": str(tmp_path / "spool")}
    root = Path(__file__).parents[2]
    proc = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with server.client() as api:
            pauser = Pauser(api, "jax-steer", hold=1.0, then={"type": "resume"})
            pauser.run()
            assert pauser.error is None, pauser.error
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
            assert set(pauser.statuses) == {"paused"} and len(set(pauser.points)) == 1

            seen = json.loads(report.read_text())
            assert (seen["backend"], seen["scale"]) == ("jax", 0.0) and seen["lr"] == pytest.approx(0.05)
            losses = batch_losses(api, "jax-steer")
            assert sorted(losses) == list(range(60))  # every batch once
            assert all(losses[s] == pytest.approx(math.log(3), abs=1e-5) for s in range(40, 60))
            assert not any(losses[s] == pytest.approx(math.log(3), abs=1e-3) for s in range(20, 40))
            by_type = {c["type"]: c for c in api.get("/api/v1/runs/jax-steer/commands").json()}
            assert {t: (c["status"], c["step"]) for t, c in by_type.items()} == {
                "set_param": ("applied", 40),
                "set_lr": ("applied", 9),
                "pause": ("applied", 12),
                "resume": ("applied", 12),
            }
            lr = api.get("/api/v1/runs/jax-steer/series/batch/lr").json()
            assert (lr["steps"], lr["values"]) == ([0, 9], [0.01, 0.05])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_checkpoints_go_to_checkpoints_run_id_in_the_working_folder_by_default(
    server, api, spool_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir)
    fit([AtStep({2: lambda s: send_and_wait(api, cb, {"type": "checkpoint"})}), cb], epochs=1)
    saved = tmp_path / "checkpoints" / cb.run_id / "step-2.keras"
    assert saved.exists() and keras.models.load_model(saved, compile=False).count_params() > 0
    [command] = api.get(f"/api/v1/runs/{cb.run_id}/commands").json()
    assert command["message"] == f"saved {saved} at step 2"


def test_with_several_steps_per_call_a_scheduled_command_applies_at_the_first_edge_past_its_step(
    server, api, spool_dir
):
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir)
    model = tiny_model(keras.optimizers.SGD(0.01))
    model.compile(
        optimizer=model.optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=4,
    )
    sent = {}
    at6 = {"type": "set_lr", "args": {"value": 0.03}, "at": {"step": 6}}
    fit([AtStep({0: lambda s: sent.update(send_and_wait(api, cb, at6))}), cb], epochs=2, model=model)
    command = the_command(api, cb.run_id, sent["id"])
    assert (command["status"], command["step"]) == ("applied", 8)  # the edges are 0, 4, 8, ...
    assert float(model.optimizer.learning_rate) == pytest.approx(0.03)


def test_a_factor_that_would_pass_the_servers_limit_fails(server, api, spool_dir):
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir)
    model = tiny_model(keras.optimizers.SGD(4.0))
    sent = {}
    factor = {"type": "set_lr", "args": {"factor": 3}}
    fit([AtStep({1: lambda s: sent.update(send_and_wait(api, cb, factor))}), cb], epochs=1, model=model)
    command = the_command(api, cb.run_id, sent["id"])
    assert (command["status"], command["message"]) == ("failed", "4 x 3 = 12 is above the server's limit 10")
    assert float(model.optimizer.learning_rate) == pytest.approx(4.0)
