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
"""

from __future__ import annotations

from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider
from werkzeug.sansio.response import Response

_OPTIONS = (orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
            | orjson.OPT_PASSTHROUGH_DATACLASS)
_LAYOUT = frozenset({"indent", "separators"})


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
