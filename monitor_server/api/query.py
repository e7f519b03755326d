"""A query parameter that takes one value must come once.

FastAPI reads every value of a list parameter (`tag`) and only the last of any other, so
`?limit=1&limit=2` would pass as `limit=2`; the OpenAPI document sends such a parameter
once. `given_once` runs before every route and refuses the repeat (422), for whatever
parameters the route declares.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import field_annotation_is_sequence
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute


def _single_valued(dependant: Dependant) -> Iterator[str]:
    """The query parameters of `dependant` and its dependencies that FastAPI reads one
    value of (it decides by the same test)."""
    for param in dependant.query_params:
        if not field_annotation_is_sequence(param.field_info.annotation):
            yield param.alias
    for sub in dependant.dependencies:
        yield from _single_valued(sub)


async def given_once(request: Request) -> None:
    """422 for a single-valued query parameter given more than once."""
    route = request.scope.get("route")
    if not request.scope["query_string"] or not isinstance(route, APIRoute):
        return
    params = request.query_params
    repeated = [name for name in _single_valued(route.dependant) if len(params.getlist(name)) > 1]
    if repeated:
        raise RequestValidationError([_error(name) for name in dict.fromkeys(repeated)])


def _error(name: str) -> dict[str, Any]:
    return {"loc": ("query", name), "msg": "given more than once; it takes one value", "type": "repeated_value"}
