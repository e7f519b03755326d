"""A run's config as the callback records it stays far under the server's limit on it."""

from __future__ import annotations

import json

import keras
import pytest

from client_callbacks import RemoteCallback
from tests.support.training import fit


@pytest.mark.slow
def test_a_recorded_config_is_under_a_hundredth_of_the_limit(server, api, spool_dir):
    # 21 layers and a schedule: nothing the callback records grows with the model.
    keras.utils.set_random_seed(0)
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([10, 20], [0.01, 0.005, 0.001])
    model = keras.Sequential(
        [keras.Input((8,)), *(keras.layers.Dense(16, activation="relu") for _ in range(20)), keras.layers.Dense(3)]
    )
    model.compile(optimizer=keras.optimizers.AdamW(schedule), loss="sparse_categorical_crossentropy")
    cb = RemoteCallback(url=server.url, spool_dir=spool_dir, config={"units": 16, "layers": 20, "augment": True})
    fit([cb], epochs=1, model=model)

    config = api.get(f"/api/v1/runs/{cb.run_id}").json()["config"]
    size = len(json.dumps(config, separators=(",", ":")).encode())
    assert config["optimizer"]["class"] == "AdamW" and config["context"]["argv"]
    assert size * 100 < server.settings.max_config_bytes, (size, config)
