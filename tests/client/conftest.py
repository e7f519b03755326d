"""Client fixtures: a real server (in a thread, or as its own process that a test can
kill) on SQLite, and a spool folder. The tiny Keras model and the callbacks that act at a
given step are in tests/support/training.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before any test module of this folder imports Keras.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.support.servers import ServerProcess


@pytest.fixture
def database_url(tmp_path) -> str:
    """Client tests run on SQLite only; the server suite covers PostgreSQL."""
    return f"sqlite:///{tmp_path / 'fitwatch.db'}"


@pytest.fixture
def spool_dir(tmp_path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def server_process(database_url: str) -> Iterator[ServerProcess]:
    process = ServerProcess(database_url)
    yield process
    process.stop()
