"""The server's request models and the wire contract the client is written against agree:
the command types, the args a training may find in each, the scopes and the bounds."""

from __future__ import annotations

import typing

from pydantic import TypeAdapter

from client_callbacks import wire
from monitor_server.domain.commands import COMMANDS, CommandCreate, LrFactor, stored_args
from monitor_server.domain.schemas import LogBatch


def test_every_command_type_of_the_server_is_one_the_client_knows_with_its_args():
    assert [typing.get_args(c.model_fields["type"].annotation)[0] for c in COMMANDS] == list(wire.COMMAND_TYPES)
    for command in COMMANDS:
        kind = typing.get_args(command.model_fields["type"].annotation)[0]
        args = command.model_fields["args"].annotation
        fields = set().union(*(m.model_fields for m in typing.get_args(args) or (args,)))
        assert fields <= set(wire.COMMAND_ARGS[kind]), kind


def test_what_a_training_receives_is_named_in_the_contract():
    command = TypeAdapter(CommandCreate).validate_python({"type": "set_lr", "args": {"factor": 0.5, "optimizer": 0}})
    assert isinstance(command.args, LrFactor)
    assert set(stored_args(command, max_lr=10.0)) <= set(wire.COMMAND_ARGS["set_lr"])


def test_log_bounds_are_the_contracts():
    schema = LogBatch.model_json_schema()
    record = schema["$defs"]["LogRecord"]["properties"]
    assert record["scope"]["enum"] == list(wire.SCOPES)
    assert record["metrics"]["maxProperties"] == wire.MAX_METRICS
    assert record["metrics"]["propertyNames"]["maxLength"] == wire.MAX_NAME
    assert record["epoch"]["anyOf"][0]["maximum"] == wire.MAX_INT32
