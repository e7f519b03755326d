"""Commands from the server applied inside a real `model.fit`: stop and set_lr, each
exactly once, at a batch edge, acknowledged with what happened."""

from __future__ import annotations

import time
from contextlib import ExitStack

import keras
import pytest

from client_callbacks import RemoteCallback
from tests.support.api import batch_steps, records
from tests.support.training import STEPS, AtStep, data, fit, send_and_wait, tiny_model
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # every test runs a real Keras fit


def commands(api, run_id: str) -> list[dict]:
    return api.get(f"/api/v1/runs/{run_id}/commands").json()


def test_stop_command_ends_fit_at_next_batch(server, api, spool_dir):
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir)
    sent = {}
    fit([AtStep({3: lambda step: sent.update(send_and_wait(api, cb, {"type": "stop_training"}))}), cb], epochs=5)

    # Received before batch 3 began (AtStep runs first): batch 3 is the last.
    assert batch_steps(api, cb.run_id) == [0, 1, 2, 3]
    run = api.get(f"/api/v1/runs/{cb.run_id}").json()
    assert run["status"] == "stopped"
    assert run["reason"] == f"stop command {sent['id']}: stopped after step 3"
    [command] = commands(api, cb.run_id)
    assert (command["status"], command["step"]) == ("applied", 3)
    assert command["message"] == "training stops after step 3"


def test_stops_taken_at_one_edge_are_each_acked_applied(server, api, spool_dir):
    """A person's stop and a rule's, received together: both took effect at the same edge."""
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir)

    def two_stops(step):
        send_and_wait(api, cb, {"type": "stop_training"})
        send_and_wait(api, cb, {"type": "stop_training"})

    fit([AtStep({3: two_stops}), cb], epochs=5)
    stops = commands(api, cb.run_id)
    assert [(c["status"], c["step"], c["message"]) for c in stops] == [
        ("applied", 3, "training stops after step 3")
    ] * 2
    run = api.get(f"/api/v1/runs/{cb.run_id}").json()
    assert run["reason"] == f"stop command {stops[0]['id']}: stopped after step 3"


def test_commands_ride_on_log_answers_without_polling(server, api, spool_dir):
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir, poll_interval=0, flush_interval=0.05)

    def stop(step):
        wait_for(lambda: api.get(f"/api/v1/runs/{cb.run_id}").status_code == 200, what="the run to exist")
        api.post(f"/api/v1/runs/{cb.run_id}/commands", json={"type": "stop_training"})

    fit([AtStep({3: stop}, pause=0.02), cb], epochs=5)
    [command] = commands(api, cb.run_id)
    assert command["status"] == "applied" and 3 <= command["step"] < 5 * STEPS
    assert batch_steps(api, cb.run_id) == list(range(command["step"] + 1))
    assert api.get(f"/api/v1/runs/{cb.run_id}").json()["status"] == "stopped"


def test_set_lr_changes_the_optimizer_and_the_lr_series(server, api, spool_dir):
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir)
    model = tiny_model(keras.optimizers.SGD(0.01))
    fit(
        [AtStep({5: lambda step: send_and_wait(api, cb, {"type": "set_lr", "args": {"value": 0.05}})}), cb],
        epochs=2,
        model=model,
    )

    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)
    lr = api.get(f"/api/v1/runs/{cb.run_id}/series/batch/lr").json()
    assert (lr["steps"], lr["values"]) == ([0, 5], [0.01, 0.05])
    epoch_lr = api.get(f"/api/v1/runs/{cb.run_id}/series/epoch/lr").json()
    assert epoch_lr["values"] == [0.05, 0.05]
    [command] = commands(api, cb.run_id)
    assert command["status"] == "applied" and command["step"] == 5
    assert command["message"] == "learning rate 0.01 -> 0.05 at step 5"


def test_set_lr_on_a_schedule_is_acknowledged_failed(server, api, spool_dir):
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.9)
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir)
    fit(
        [AtStep({2: lambda step: send_and_wait(api, cb, {"type": "set_lr", "args": {"value": 0.5}})}), cb],
        epochs=1,
        model=tiny_model(keras.optimizers.SGD(schedule)),
    )

    [command] = wait_for(
        lambda: [c for c in commands(api, cb.run_id) if c["status"] == "failed"], what="the failed ack"
    )
    assert command["message"] == "the learning rate is an ExponentialDecay, a schedule; it cannot be set"
    assert command["step"] == 2
    assert api.get(f"/api/v1/runs/{cb.run_id}").json()["status"] == "finished"


def test_set_lr_reaches_the_inner_optimizer_of_a_loss_scale_optimizer(server, api, spool_dir):
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir)
    model = tiny_model(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01)))
    fit(
        [AtStep({2: lambda step: send_and_wait(api, cb, {"type": "set_lr", "args": {"value": 0.2}})}), cb],
        epochs=1,
        model=model,
    )
    assert float(model.optimizer.inner_optimizer.learning_rate) == pytest.approx(0.2)
    assert commands(api, cb.run_id)[0]["status"] == "applied"


def test_scheduler_overriding_set_lr_is_visible_in_the_lr_series(server, api, spool_dir):
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir)
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch: 0.01 * (epoch + 1))
    fit(
        [scheduler, AtStep({4: lambda step: send_and_wait(api, cb, {"type": "set_lr", "args": {"value": 0.5}})}), cb],
        epochs=3,
    )

    lr = api.get(f"/api/v1/runs/{cb.run_id}/series/batch/lr").json()
    # The scheduler's 0.01, the command's 0.5 at step 4, then the scheduler again each epoch.
    assert lr["steps"] == [0, 4, STEPS, 2 * STEPS]
    assert lr["values"] == [0.01, 0.5, 0.02, 0.03]
    assert api.get(f"/api/v1/runs/{cb.run_id}/series/epoch/lr").json()["values"] == [0.5, 0.02, 0.03]


def test_reduce_lr_on_plateau_shows_in_the_lr_series(server, api, spool_dir):
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir)
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=100)
    fit([cb, plateau], epochs=4)
    # Epoch 0 sets the best loss; each later epoch misses it by min_delta and halves the rate.
    lr = api.get(f"/api/v1/runs/{cb.run_id}/series/batch/lr").json()
    assert (lr["steps"], lr["values"]) == ([0, 2 * STEPS, 3 * STEPS], [0.01, 0.005, 0.0025])


def test_each_command_is_applied_once(server, api, spool_dir, monkeypatch):
    """The server hands every unacknowledged command to each poll and each log answer;
    the training applies it once."""
    from client_callbacks.handlers import HANDLERS, set_lr

    cb = RemoteCallback(url=server.url, spool_dir=spool_dir, flush_interval=0.05, poll_interval=0.05)
    applied = []

    def counting(ctx, args):
        applied.append(ctx.command["id"])
        return set_lr(ctx, args)

    monkeypatch.setitem(HANDLERS, "set_lr", counting)
    fit(
        [AtStep({2: lambda step: send_and_wait(api, cb, {"type": "set_lr", "args": {"value": 0.02}})}, pause=0.02), cb],
        epochs=2,
    )
    assert len(applied) == 1
    assert (
        next(r for r in records(api, cb.run_id) if r["metrics"].get("lr") == 0.02 and r["scope"] == "batch")["step"]
        == 2
    )


def test_the_training_handles_exactly_the_commands_of_the_wire_contract():
    from client_callbacks.handlers import HANDLERS
    from client_callbacks.wire import COMMAND_TYPES

    assert sorted(HANDLERS) == sorted(COMMAND_TYPES)


def test_monitor_client_hands_over_each_command_once_and_acks_it(server, api, spool_dir):
    from client_callbacks import MonitorClient

    with MonitorClient(url=server.url, spool_dir=spool_dir, poll_interval=0.05) as client:
        wait_for(lambda: api.get(f"/api/v1/runs/{client.run_id}").status_code == 200, what="the run")
        issued = api.post(f"/api/v1/runs/{client.run_id}/commands", json={"type": "stop_training"}).json()
        [command] = wait_for(client.take_commands, what="the command")
        time.sleep(0.3)  # several more polls return it, unacknowledged
        assert client.take_commands() == []
        client.ack(command["id"], "applied", "stopped the loop", step=7)
        assert client.flush(5)
    [stored] = commands(api, client.run_id)
    assert stored["id"] == issued["id"]
    assert (stored["status"], stored["message"], stored["step"]) == ("applied", "stopped the loop", 7)


def test_the_first_command_poll_comes_after_the_run_exists(server, api, spool_dir, monkeypatch):
    """No request of the client is refused: the poller waits for the sender to create the run."""
    from client_callbacks import transport

    seen = []  # ("sent" | status, method, path) in the order they happened

    def observed(*args, **kwargs):
        client = transport.http_client(*args, **kwargs)
        client.event_hooks["request"].append(lambda r: seen.append(("sent", r.method, r.url.path)))
        client.event_hooks["response"].append(lambda r: seen.append((r.status_code, r.request.method, r.url.path)))
        return client

    monkeypatch.setattr("client_callbacks.client.http_client", observed)
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir, poll_interval=0.05)

    def polled(step):
        wait_for(lambda: any(e[1:] == ("GET", f"/api/v1/runs/{cb.run_id}/commands") for e in seen), what="a poll")

    fit([AtStep({1: polled}), cb], epochs=2)
    first_poll = next(i for i, e in enumerate(seen) if e[1:] == ("GET", f"/api/v1/runs/{cb.run_id}/commands"))
    created = seen.index((201, "POST", "/api/v1/runs"))
    assert created < first_poll
    assert [e for e in seen if e[0] != "sent" and e[0] >= 400] == []


def test_a_command_that_comes_during_the_last_validation_is_cancelled_not_carried_over(server, api, spool_dir):
    """It arrives after the last batch began: nothing applies it, the run's end cancels it,
    and the next fit with the same callback does not apply it at its first batch."""
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir)
    sent = {}

    class DuringLastValidation(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_test_begin(self, logs=None):
            if self.epoch == 1 and not sent:
                sent.update(send_and_wait(api, cb, {"type": "set_lr", "args": {"value": 0.5}}))

    model = fit([DuringLastValidation(), cb], epochs=2, validation_data=data(64))
    [command] = commands(api, cb.run_id)
    assert command["status"] == "cancelled"
    assert command["message"] == "not applied: the run ended (finished) before the training applied it"

    fit([cb], epochs=1, model=model)  # the same callback, a second fit
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)
    assert api.get(f"/api/v1/runs/{cb.run_id}/series/batch/lr").json()["values"] == [0.01]
    assert commands(api, cb.run_id)[0]["status"] == "cancelled"


def test_a_cancel_that_reaches_the_training_first_withdraws_the_command(server, api, spool_dir):
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir, poll_interval=0.05)
    model = tiny_model(keras.optimizers.SGD(0.01))
    outcome = {}

    def send_then_cancel(step):
        command = send_and_wait(api, cb, {"type": "set_lr", "args": {"value": 0.5}})
        # The training holds it, not yet applied: the cancel asks it to withdraw it.
        answer = api.post(
            f"/api/v1/runs/{cb.run_id}/commands/{command['id']}/cancel", headers={"content-type": "application/json"}
        )
        outcome["answer"] = answer.status_code
        wait_for(lambda: commands(api, cb.run_id)[0]["status"] == "cancelled", what="the training to withdraw it")

    fit([AtStep({3: send_then_cancel}), cb], epochs=1, model=model)
    assert outcome["answer"] == 202
    [command] = commands(api, cb.run_id)
    assert (command["status"], command["message"]) == ("cancelled", "cancelled before the training applied it")
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)  # the model agrees with the page


def test_a_cancel_that_comes_after_the_command_was_applied_leaves_it_applied(server, api, spool_dir):
    from client_callbacks import MonitorClient

    with MonitorClient(url=server.url, spool_dir=spool_dir, poll_interval=0.05) as client:
        wait_for(lambda: api.get(f"/api/v1/runs/{client.run_id}").status_code == 200, what="the run")
        issued = api.post(
            f"/api/v1/runs/{client.run_id}/commands", json={"type": "set_lr", "args": {"value": 0.5}}
        ).json()
        [taken] = wait_for(client.take_commands, what="the command")
        cancel = api.post(
            f"/api/v1/runs/{client.run_id}/commands/{issued['id']}/cancel", headers={"content-type": "application/json"}
        )
        assert cancel.status_code == 202  # asked: the training may have applied it already
        client.ack(taken["id"], "applied", "learning rate 0.01 -> 0.5", step=4)  # it had
        assert client.flush(10)
    [stored] = commands(api, client.run_id)
    assert (stored["status"], stored["step"], stored["message"]) == ("applied", 4, "learning rate 0.01 -> 0.5")


def test_trainings_started_together_do_not_poll_in_step(server, spool_dir, monkeypatch):
    """Each poll waits a little less than WAIT by a random part: a sweep's trainings, started
    at once, would otherwise bring all their polls to the server at the same moment."""
    from client_callbacks import MonitorClient, poller, transport

    waits = []

    def observed(*args, **kwargs):
        client = transport.http_client(*args, **kwargs)
        client.event_hooks["request"].append(
            lambda r: waits.append(float(r.url.params["wait"])) if r.url.path.endswith("/commands") else None
        )
        return client

    monkeypatch.setattr("client_callbacks.client.http_client", observed)
    with ExitStack() as trainings:
        for _ in range(6):
            trainings.enter_context(MonitorClient(url=server.url, spool_dir=spool_dir, poll_interval=0.05))
        wait_for(lambda: len(waits) >= 6, what="a poll of each training")
    assert all(0.75 * poller.WAIT <= w <= poller.WAIT for w in waits), waits
    assert len(set(waits)) > 1, waits
