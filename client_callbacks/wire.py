"""The wire contract between a training and a fitwatch server, written once.

The client and the server both import it (it imports nothing of either): what one side
writes and the other reads is defined here, so the two cannot drift apart. The server's
request models (`monitor_server.domain`) are built on these names and bounds; a test
holds the two in step.
"""

from __future__ import annotations

import random

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_PROJECT = "default"

# What a training reads from its environment.
ENV_URL = "FITWATCH_URL"
ENV_TOKEN = "FITWATCH_TOKEN"
ENV_PROJECT = "FITWATCH_PROJECT"
ENV_SPOOL_DIR = "FITWATCH_SPOOL_DIR"

# A record's seq is `writer << WRITER_BITS | n`: each client draws its writer id from
# [1, MAX_WRITER], so its seqs never meet another's and stay within int64. Writer 0 is
# the server's own (the posts of keras.callbacks.RemoteMonitor): seqs below SERVER_SEQS.
WRITER_BITS = 32
SERVER_SEQS = 1 << WRITER_BITS
MAX_WRITER = 2**31 - 1

MAX_INT32 = 2**31 - 1  # epochs, command ids, rule ids
MAX_INT64 = 2**63 - 1  # steps and seqs
RUN_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
MAX_NAME = 200  # characters of a metric or param name
MAX_METRICS = 1000  # metric values one record carries
RECORDS_A_POST = 1000  # records a client sends in one request (the server takes up to its max_records)
MAX_MESSAGE = 2000  # characters of a run's end reason or a command ack's message

# Where a record comes from: training batches, epochs, `evaluate()` calls, or the samples
# of the process and machine (CPU, memory, GPUs) taken beside the training.
SCOPES = ("batch", "epoch", "eval", "system")

# The commands a training understands, with the args it may find in each (`at_most`: the
# server's largest rate, sent along with a `factor`).
COMMAND_ARGS = {
    "stop_training": (),
    "set_lr": ("value", "factor", "optimizer", "at_most"),
    "set_param": ("name", "value", "optimizer"),
    "pause": ("timeout",),
    "resume": (),
    "checkpoint": ("name",),
    "action": ("name",),
}
COMMAND_TYPES = tuple(COMMAND_ARGS)
ACK_STATUSES = ("applied", "failed", "cancelled")  # what a training answers a command with

# Polls and retries wait a random share of their delay, so that many trainings that lost
# the server together do not come back together. The jitter comes from the system's
# generator: the training's global `random` (and a Random of our own, which would draw the
# same in every process forked from one parent) stays untouched.
JITTER = random.SystemRandom()


def backoff(failures: int, base: float, cap: float) -> float:
    """Seconds to wait after `failures` failures in a row: doubling from `base` up to
    `cap`, each a random 50-100 % of that."""
    return min(cap, base * 2 ** max(0, failures - 1)) * JITTER.uniform(0.5, 1.0)
