"""A monitored training does what it would do bare, and the server says only what the model
did: real programs (tests/support/programs.py), each backend in its own process against its own
server, the training's own account (History, its optimizers, its random states) held
against what the server stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from monitor_server.config import Settings
from tests.support.servers import serve

pytestmark = pytest.mark.slow  # tests/support/programs.py on each backend: minutes

ROOT = Path(__file__).parents[2]
BACKENDS = ["tensorflow", "jax", "torch"]


@dataclass
class Ran:
    backend: str
    seen: dict  # what the training process reported
    api: httpx.Client

    def commands(self, run_id: str) -> list[dict]:
        return sorted(self.api.get(f"/api/v1/runs/{run_id}/commands").json(), key=lambda c: c["id"])

    def series(self, run_id: str, scope: str, name: str) -> dict:
        return self.api.get(f"/api/v1/runs/{run_id}/series/{scope}/{name}", params={"max_points": 100_000}).json()


@contextmanager
def small_disk(folder: Path) -> Iterator[bool]:
    """A 1 MiB tmpfs at `folder`, a disk that really fills up (ENOSPC); False where this
    process may not mount one."""
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture(scope="module", params=BACKENDS)
def ran(request, tmp_path_factory) -> Iterator[Ran]:
    """Every program of tests/support/programs.py, run once on this backend, with the spool on a
    small disk that `full_disk`, last, fills up."""
    backend = request.param
    folder = tmp_path_factory.mktemp(backend)
    programs = ["shuffled", "unknown_length", "stop_after_several", "epoch_logs"]
    if backend != "jax":
        programs.append("gan")
    with (
        small_disk(folder / "disk") as mounted,
        serve(Settings(database_url=f"sqlite:///{folder / 'fitwatch.db'}")) as server,
    ):
        env = {**os.environ, "KERAS_BACKEND": backend, "FITWATCH_SPOOL_DIR": str(folder / "disk" / "spool")}
        report = folder / "report.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.support.programs",
                server.url,
                str(report),
                *programs,
                *(["full_disk"] if mounted else []),
            ],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=600,
        )
        with server.client() as api:
            yield Ran(backend, json.loads(report.read_text()), api)


def test_a_monitored_fit_draws_no_randomness(ran):
    """A data pipeline that shuffles with Python's `random` sees the same numbers with
    fitwatch as without, whether the server answers or not: same losses, same states."""
    seen = ran.seen["shuffled"]
    assert {"python", "numpy", "keras"} <= set(seen["bare"]["states"])
    assert seen["monitored"] == seen["bare"]
    assert seen["server_away"] == seen["bare"]
    assert ran.series("shuffled", "epoch", "loss")["values"] == seen["bare"]["history"]["loss"]


@pytest.mark.parametrize("ran", ["tensorflow", "torch"], indirect=True)
def test_rates_are_set_on_the_optimizers_a_custom_train_step_uses(ran):
    """keras.io's GAN: `set_lr` sets every optimizer the step uses (not the default that
    `compile()` left in `model.optimizer`), or the one named by name or index; the ack says
    exactly what changed; an unknown optimizer fails with the list."""
    assert ran.seen["gan"]["rates"] == pytest.approx(
        {"optimizer": 0.001, "d_optimizer": 0.0001, "g_optimizer": 0.0003885}
    )
    acks = [(c["status"], c["step"], c["message"]) for c in ran.commands("gan")]
    assert acks == [
        (
            "applied",
            2,
            "learning rate of d_optimizer 0.0003 -> 0.000777, g_optimizer 0.0003 -> 0.000777 at step 2; "
            "unchanged: optimizer (not used by the training step)",
        ),
        (
            "applied",
            4,
            "learning rate of g_optimizer 0.000777 -> 0.0003885 at step 4; unchanged: optimizer (not used by the training step), d_optimizer",
        ),
        (
            "applied",
            6,
            "learning rate of d_optimizer 0.000777 -> 0.0001 at step 6; unchanged: optimizer (not used by the training step), g_optimizer",
        ),
        ("failed", 8, "no optimizer 'c_optimizer'; the model has 0: optimizer, 1: d_optimizer, 2: g_optimizer"),
    ]
    run = ran.api.get("/api/v1/runs/gan").json()
    assert run["controls"]["optimizers"] == [
        {"name": "optimizer", "learning_rate": 0.001, "settable": True, "used": False},
        {"name": "d_optimizer", "learning_rate": 0.0001, "settable": True, "used": True},
        {"name": "g_optimizer", "learning_rate": 0.0003885, "settable": True, "used": True},
    ]
    assert "learning_rate" not in run["controls"]["params"]  # no one rate to show
    g_rate = ran.series("gan", "batch", "lr.g_optimizer")
    assert (g_rate["steps"], g_rate["values"]) == ([0, 2, 4], [0.0003, 0.000777, 0.0003885])


def test_stored_steps_are_the_true_global_steps_when_the_length_is_unknown(ran):
    """Keras begins one more batch after the last of an epoch of unknown length, a batch
    that never runs: it is not counted. With 4 steps a call, the epoch's third call runs
    one step though Keras reports four (it cannot know): the next epoch still starts at
    the true step, 9 batches later."""
    for spe, seen in ran.seen["unknown_length"].items():
        spe = int(spe)
        assert len(seen["history"]["loss"]) == 3
        stored = ran.series(f"unknown-{spe}", "batch", "loss")
        # 9 batches an epoch; a call of `spe` steps is logged at the last step Keras reports.
        expected = [9 * epoch + end for epoch in range(3) for end in range(spe - 1, 12 if spe > 1 else 9, spe)]
        assert stored["steps"] == expected, f"steps_per_execution={spe}"
        assert ran.series(f"unknown-{spe}", "epoch", "loss")["values"] == seen["history"]["loss"]


def test_a_stop_names_the_last_step_that_ran(ran):
    """A stop taken before step 8 with steps_per_execution=4 lets steps 8 to 11 run (one
    call): the ack, its chart marker and the run's reason name step 11, the last stored.
    (Before it, a rate set on the optimizer named, as a GAN's would be.)"""
    seen = ran.seen["stop_after_several"]
    last = 8 + seen["spe"] - 1
    rate, stop = ran.commands("stop-after-several")
    assert (rate["status"], rate["step"], rate["message"]) == ("applied", 4, "learning rate 0.01 -> 0.02 at step 4")
    assert (stop["status"], stop["step"], stop["message"]) == ("applied", last, f"training stops after step {last}")
    run = ran.api.get("/api/v1/runs/stop-after-several").json()
    assert (run["status"], run["reason"]) == ("stopped", f"stop command {stop['id']}: stopped after step {last}")
    assert ran.series("stop-after-several", "batch", "loss")["steps"][-1] == last
    assert len(seen["history"]["loss"]) == 1


def test_the_epoch_record_has_what_history_has_wherever_the_callback_sits(ran):
    """Callbacks after RemoteCallback add to the epoch's logs (LearningRateScheduler its
    `learning_rate`, a user's own `extra`): the server stores what History stores."""
    history = ran.seen["epoch_logs"]["history"]
    assert {"loss", "val_loss", "learning_rate", "extra"} <= set(history)
    for name, values in history.items():
        assert ran.series("epoch-logs", "epoch", name)["values"] == pytest.approx(values, rel=1e-6), name


def test_a_full_disk_while_the_server_is_away_costs_one_warning_and_no_record(ran):
    """The server goes away, the spool takes records, then its disk fills up: records and
    the ack of a command applied meanwhile wait in memory and are delivered, each once,
    when the server is back; `fit` hears of it only as one warning about the disk."""
    if "full_disk" not in ran.seen:
        # CI runs privileged (it runs Docker, FITWATCH_REQUIRE_DOCKER=1): there the mount must work.
        if os.environ.get("FITWATCH_REQUIRE_DOCKER") == "1":
            pytest.fail("FITWATCH_REQUIRE_DOCKER=1 but no small tmpfs could be mounted for the spool")
        pytest.skip("mounting a small tmpfs needs root (and CAP_SYS_ADMIN in a container)")
    seen = ran.seen["full_disk"]
    assert seen["raised"] is None
    assert len([m for m in seen["warnings"] if "spool file" in m]) == 1, seen["warnings"]
    assert not [m for m in seen["warnings"] if "lost" in m or "dropped" in m], seen["warnings"]
    assert seen["spool_file"] is None  # all delivered by the end of fit
    assert seen["steps"] == list(range(5 * 10))
    [command] = seen["commands"]
    assert (command["status"], command["step"]) == ("applied", 20)
    assert seen["lr"] == pytest.approx(0.02)
    assert seen["status"] == "finished"
    assert seen["refused_writes"] <= 2  # not a write a pass while the disk stays full
