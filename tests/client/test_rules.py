"""Rules acting on real fits, on SQLite and PostgreSQL: a NaN rule stops a training with
no TerminateOnNaN in it, a no_improvement rule halves the rate of a plateaued one, and a
threshold rule notifies a local webhook receiver."""

from __future__ import annotations

import keras
import pytest

from client_callbacks import RemoteCallback
from tests.support.api import add_rule, batch_steps
from tests.support.databases import BACKENDS, backend_database
from tests.support.training import STEPS, AtStep, data, fit, tiny_model
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # real Keras fits


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """SQLite and PostgreSQL, as the server suite (the client suite's own runs on SQLite only)."""
    return backend_database(request, tmp_path)


def test_a_nan_rule_stops_a_fit_whose_loss_turns_nan(server, api, spool_dir):
    rule = add_rule(
        api,
        project="nan-watch",
        when={"scope": "batch", "name": "loss", "op": "nan"},
        then={"type": "stop_training"},
    )
    x, y = data()
    x[5 * 32 :] = float("nan")  # from the 6th batch on; the weights turn NaN after it
    epochs = 1000
    cb = RemoteCallback(url=server.url, project="nan-watch", spool_dir=spool_dir)
    fit([cb], epochs=epochs, model=tiny_model(activation=None), data=(x, y))

    run = api.get(f"/api/v1/runs/{cb.run_id}").json()
    [command] = api.get(f"/api/v1/runs/{cb.run_id}/commands").json()
    assert (command["type"], command["status"], command["issued_by"]) == (
        "stop_training",
        "applied",
        f"rule:{rule['id']}",
    )
    assert run["status"] == "stopped"
    assert run["reason"] == f"stop command {command['id']} (rule {rule['id']}): stopped after step {command['step']}"
    [firing] = api.get(f"/api/v1/runs/{cb.run_id}/firings").json()
    assert (firing["step"], firing["value"], firing["command_id"]) == (5, "NaN", command["id"])
    assert batch_steps(api, cb.run_id)[-1] == command["step"] < epochs * STEPS - 1


def plateaued_model() -> keras.Model:
    """Its output is multiplied by zero: every loss is log(3), the same at every epoch."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    outputs = keras.layers.Lambda(lambda t: t * 0.0)(keras.layers.Dense(3)(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def test_a_no_improvement_rule_halves_the_rate_of_a_plateaued_fit(server, api, spool_dir):
    rule = add_rule(
        api,
        project="plateau",
        when={"scope": "epoch", "name": "val_loss", "op": "no_improvement", "patience": 2},
        then={"type": "set_lr", "args": {"factor": 0.5}},
        once_per_run=False,
    )
    cb = RemoteCallback(url=server.url, project="plateau", spool_dir=spool_dir)
    # Before epoch 5 the training waits for the client to hold the first firing's command, so a
    # fast fit on a busy machine cannot end before any reached it.
    hold = AtStep({5 * STEPS: lambda step: wait_for(lambda: cb.client.commands.seen, what="the first command")})
    model = fit([cb, hold], epochs=12, model=plateaued_model(), validation_data=data(64))

    # val_loss never improves after epoch 0: the rule fires every second epoch after it.
    assert [f["step"] for f in api.get(f"/api/v1/runs/{cb.run_id}/firings").json()] == [2, 4, 6, 8, 10]
    commands = api.get(f"/api/v1/runs/{cb.run_id}/commands").json()
    assert {(c["type"], c["issued_by"]) for c in commands} == {("set_lr", f"rule:{rule['id']}")}
    applied = [c for c in commands if c["status"] == "applied"]
    assert applied, commands  # the first, at least; the last ones may come after the fit ended
    assert float(model.optimizer.learning_rate) == pytest.approx(0.1 * 0.5 ** len(applied))
    lr = api.get(f"/api/v1/runs/{cb.run_id}/series/batch/lr").json()
    assert lr["values"] == pytest.approx([0.1 * 0.5**k for k in range(len(applied) + 1)])


def test_a_threshold_rule_notifies_a_webhook_receiver(start_server, receiver, spool_dir):
    hook = receiver()
    server = start_server(webhook_url=hook.url)
    with server.client() as api:
        rule = add_rule(
            api, project="notify", when={"scope": "epoch", "name": "loss", "op": "below", "value": 50}, notify=True
        )
        cb = RemoteCallback(url=server.url, project="notify", spool_dir=spool_dir)
        fit([cb], epochs=3)
        wait_for(lambda: hook.bodies, what="the webhook")
        [body] = hook.bodies
        loss = api.get(f"/api/v1/runs/{cb.run_id}/series/epoch/loss").json()["values"][0]
        assert {k: body[k] for k in ("rule", "run", "step", "value", "command")} == {
            "rule": rule["id"],
            "run": cb.run_id,
            "step": 0,
            "value": loss,
            "command": None,
        }
        assert api.get(f"/api/v1/runs/{cb.run_id}/commands").json() == []
