"""The errors a client can cause, each with its HTTP status: raised in every layer below the
routes, answered by `api.errors` as `{"detail": ...}`."""

from __future__ import annotations


class ApiError(Exception):
    """An error a client caused; `status` is its HTTP status."""

    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class BadJson(ApiError):
    status = 400


class Invalid(ApiError):
    status = 422


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class UnsupportedMediaType(ApiError):
    status = 415


class TooLarge(ApiError):
    status = 413


ECHO_MAX = 100  # characters of an offending input (a key, a tag) that an error repeats


def clip(text: str) -> str:
    """`text`, or its first ECHO_MAX characters and an ellipsis."""
    return text if len(text) <= ECHO_MAX else text[:ECHO_MAX] + "…"
