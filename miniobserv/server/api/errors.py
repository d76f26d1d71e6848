"""The one JSON error envelope: every failure answers ``{"error": "<message>"}`` (SPEC §3).

Views raise :class:`ApiError` (or let a model :class:`~miniobserv.errors.ValidationError`
escape); :func:`register_error_handlers` turns those, marshmallow errors, routing errors
(404, 405, 413 …), :class:`StorageUnavailable` (503 with ``Retry-After``, as every answer
meaning "the database is unavailable, come back later"), :class:`BatchConflict` (409: a
``batch_id`` reused for other content), :class:`LimitExceeded` (400 naming the field: a
cardinality limit) and anything unexpected (500, logged with its
traceback) into the same JSON shape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import marshmallow as ma
from flask import Flask, Response, jsonify, request
from marshmallow.exceptions import SCHEMA
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from miniobserv.errors import ValidationError
from miniobserv.server.storage.base import BatchConflict, StorageUnavailable
from miniobserv.server.storage.series import LimitExceeded

logger = logging.getLogger(__name__)

# Seconds a client is asked to wait after a 503 of an unavailable database (``Retry-After``).
# The agent waits the longer of this and its own backoff, so this only sets the first retries'
# pace: a database restart takes a few seconds, and the pool reconnects within about as long.
STORAGE_RETRY_AFTER_S = 5
UNAVAILABLE_HEADERS: Mapping[str, str] = {"Retry-After": str(STORAGE_RETRY_AFTER_S)}


class ApiError(Exception):
    """An error answered as ``status`` with ``{"error": message}`` and optional headers."""

    def __init__(self, status: int, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def bad_request(field: str, message: str) -> ApiError:
    """A 400 whose message names the offending field, as ``field: message``."""
    return ApiError(400, f"{field}: {message}")


def error_response(status: int, message: str,
                   headers: Mapping[str, str] | None = None) -> Response:
    """Build the JSON error envelope."""
    response = jsonify(error=message)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _handle_api_error(err: ApiError) -> Response:
    return error_response(err.status, err.message, err.headers)


def _handle_validation_error(err: ValidationError) -> Response:
    return error_response(400, str(err))


def _handle_marshmallow_error(err: ma.ValidationError) -> Response:
    field, message = first_marshmallow_message(err.messages)
    return error_response(400, f"{field}: {message}" if field else message)


def first_marshmallow_message(messages: Any, path: str = "") -> tuple[str, str]:
    """The first leaf of marshmallow's nested messages as ``(field path, message)``."""
    if isinstance(messages, Mapping) and messages:
        key, value = next(iter(messages.items()))
        if isinstance(key, int):
            return first_marshmallow_message(value, f"{path}[{key}]")
        if key == SCHEMA:
            return first_marshmallow_message(value, path)
        return first_marshmallow_message(value, f"{path}.{key}" if path else str(key))
    if isinstance(messages, list) and messages:
        return first_marshmallow_message(messages[0], path)
    return path, str(messages) if messages else "is invalid"


def _handle_http_exception(err: HTTPException) -> WerkzeugResponse:
    response = err.get_response()  # keeps headers such as Allow on a 405
    message = (err.name or "error").lower()
    if err.code == 413:
        message = "body: request body is too large"
    response.set_data(jsonify(error=message).get_data())
    response.content_type = "application/json"
    return response


def _handle_storage_unavailable(err: StorageUnavailable) -> Response:
    logger.warning("storage unavailable during %s %s: %s", request.method, request.path, err)
    return error_response(503, "storage unavailable", UNAVAILABLE_HEADERS)


def readiness_unavailable() -> tuple[Response, int]:
    """``/readyz``'s answer while the database is down (its own body, SPEC §3)."""
    response = jsonify(status="unavailable", error="database unavailable")
    response.headers.update(UNAVAILABLE_HEADERS)
    return response, 503


def _handle_batch_conflict(err: BatchConflict) -> Response:
    # The client reused the id of a stored batch for other content: that batch is refused,
    # not acknowledged and dropped. Worth a warning: it is usually a client bug.
    logger.warning("%s %s refused: %s", request.method, request.path, err)
    return error_response(409, "batch_id: already used for a different batch")


def _handle_limit_exceeded(err: LimitExceeded) -> Response:
    # A client (or a label value that churns) past MAX_SERIES_PER_HOST / MAX_HOSTS: refused
    # whole. Logged, since the sender drops a 400 for good.
    logger.warning("%s %s refused: %s", request.method, request.path, err)
    return error_response(400, str(err))


def _handle_unexpected(err: Exception) -> Response:
    logger.exception("unhandled error in %s %s", request.method, request.path)
    return error_response(500, "internal server error")


def register_error_handlers(app: Flask) -> None:
    """Make every error of ``app`` answer the JSON envelope."""
    app.register_error_handler(ApiError, _handle_api_error)
    app.register_error_handler(ValidationError, _handle_validation_error)
    app.register_error_handler(ma.ValidationError, _handle_marshmallow_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(StorageUnavailable, _handle_storage_unavailable)
    app.register_error_handler(BatchConflict, _handle_batch_conflict)
    app.register_error_handler(LimitExceeded, _handle_limit_exceeded)
    app.register_error_handler(Exception, _handle_unexpected)
