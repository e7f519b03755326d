"""What the open pages and the trainings' long-polls are told of a change, after its commit.

Every event the server publishes on its bus is built here, once: a run as the list shows
it and whole, a command, a rule's firing (and its webhook), a post's points.
"""

from __future__ import annotations

from typing import Any

from ..domain.records import Record
from ..domain.schemas import CommandPublic, RunPublic, encode_float
from ..infra.bus import RUNS_TOPIC, EventBus, command_topic, run_topic
from ..infra.webhooks import Webhooks
from ..store.rules import Fired


def run(bus: EventBus, public: RunPublic) -> None:
    """The run's change: as the list shows it to the list's stream, whole to its own."""
    bus.publish(RUNS_TOPIC, "run", public.summary_json())
    bus.publish(run_topic(public.id), "run", public.model_dump(mode="json"))


def command(bus: EventBus, public: CommandPublic, wake: bool = False) -> None:
    """Tell the run's streams about a command; `wake` also ends long-polls waiting for one."""
    bus.publish(run_topic(public.run_id), "command", public.model_dump(mode="json"))
    if wake:
        bus.publish(command_topic(public.run_id), "command", None)


def fired(bus: EventBus, webhooks: Webhooks, what: Fired) -> None:
    """The commands rules issued, a `rule` event for each firing (on the run's stream and
    the run list's), and the webhooks."""
    for issued in what.commands:
        command(bus, issued, wake=True)
    for firing in what.firings:
        data = firing.model_dump(mode="json")
        bus.publish(run_topic(firing.run_id), "rule", data)
        bus.publish(RUNS_TOPIC, "rule", data)
    for firing in what.notify:
        webhooks.send(firing)


def points(bus: EventBus, run_id: str, records: list[Record]) -> None:
    """Stored records, to the run's stream when a page listens."""
    topic = run_topic(run_id)
    if records and bus.has_subscribers(topic):
        bus.publish(topic, "metrics", {"records": event_records(records)})


def event_records(records: list[Record]) -> list[dict[str, Any]]:
    """Accepted records as strict JSON for the live stream."""
    return [
        {
            "seq": r.seq,
            "scope": r.scope,
            "step": r.step,
            "epoch": r.epoch,
            "wall_time": r.wall_time,
            "metrics": {k: encode_float(float(v)) for k, v in r.metrics.items()},
        }
        for r in records
    ]
