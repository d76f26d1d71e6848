"""orjson for bodies: request parsing keeps every strict answer, responses keep their meaning."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from flask import Flask, jsonify

from miniobserv.server.api.body import parse_json
from miniobserv.server.api.errors import ApiError
from miniobserv.server.api.jsonio import OrjsonProvider

ORJSON_DEPTH = 1024  # orjson's own limit on nested arrays and objects


def refusal(data: bytes) -> str:
    with pytest.raises(ApiError) as caught:
        parse_json(data)
    assert caught.value.status == 400
    return caught.value.message


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# --- parse_json ----------------------------------------------------------------------------


def test_nesting_exactly_at_orjsons_limit_is_parsed() -> None:
    value: Any = parse_json(nested(ORJSON_DEPTH))
    depth = 0
    while value != []:
        value, depth = value[0], depth + 1
    assert depth == ORJSON_DEPTH - 1


def test_nesting_one_past_orjsons_limit_is_refused_with_our_message() -> None:
    assert refusal(nested(ORJSON_DEPTH + 1)) == "body: JSON is nested too deeply"


@pytest.mark.parametrize(("data", "expected"), [
    (b'{"v": NaN}', "body: NaN is not valid JSON (numbers must be finite)"),
    (b'{"v": -Infinity}', "body: -Infinity is not valid JSON (numbers must be finite)"),
    (b'{"v": ' + b"9" * 5000 + b"}", "body: has a number with too many digits"),
    (b'{"v": "\xc3\x28"}', "body: is not valid UTF-8"),
    (b"  \n", "body: is empty; expected a JSON object"),
    (b'{"v": 1} x', "body: is not valid JSON (Extra data: line 1 column 10 (char 9))"),
    (b'["a\x01"]', "body: is not valid JSON (Invalid control character at: line 1 column 4 "
                   "(char 3))"),
])
def test_refusals_keep_the_standard_librarys_wording(data: bytes, expected: str) -> None:
    assert refusal(data) == expected


@pytest.mark.parametrize(("data", "expected"), [
    ('{"v": 1}'.encode("utf-16"), {"v": 1}),  # a BOM and UTF-16, which orjson refuses
    (b'\xef\xbb\xbf{"v": 1}', {"v": 1}),  # a UTF-8 BOM
    (b'{"v": 1e400}', {"v": math.inf}),  # the model then says "must be finite"
    (b'{"v": 1' + b"0" * 400 + b"}", {"v": 10 ** 400}),  # ... and "is out of range"
    (b'{"v": "\\ud800"}', {"v": "\ud800"}),  # ... and "must be valid Unicode"
])
def test_documents_only_the_standard_library_reads_are_read_as_before(data: bytes,
                                                                      expected: Any) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(data)
    assert parse_json(data) == expected


@pytest.mark.parametrize("text", [
    '{"b": 1, "a": [1.5, -0.0, 1e-300, 12345678901234567890, "é\\u0000", true, null]}',
    '{"k": "x", "k": "y"}', '[0.1, 0.2, 1.7976931348623157e308, 5e-324]', '"\\u00e9\\n"',
    '{"metrics": [{"time": "2026-01-01T00:00:00Z", "value": 1}]}', "[]", "{}", "0",
])
def test_orjson_reads_what_the_standard_library_reads(text: str) -> None:
    parsed = parse_json(text.encode())
    assert parsed == json.loads(text)
    assert json.dumps(parsed) == json.dumps(json.loads(text))  # key order and types too


# --- responses -----------------------------------------------------------------------------


@dataclasses.dataclass
class Pair:
    left: int
    right: str


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.json.sort_keys = False
    return app


def body_of(app: Flask, value: Any) -> bytes:
    with app.app_context():
        return bytes(jsonify(value).get_data())


def test_response_is_compact_in_insertion_order_with_a_newline(app: Flask) -> None:
    assert body_of(app, {"b": 1, "a": [1.5, None]}) == b'{"b":1,"a":[1.5,null]}\n'


def test_non_ascii_is_written_as_utf8(app: Flask) -> None:
    assert body_of(app, {"host": "café"}) == '{"host":"café"}\n'.encode()


def test_non_finite_float_is_null_not_an_invalid_literal(app: Flask) -> None:
    assert body_of(app, {"value": math.nan}) == b'{"value":null}\n'


def test_types_flask_writes_itself_are_written_as_before(app: Flask) -> None:
    at = datetime(2026, 6, 5, 10, 0, tzinfo=UTC)
    assert json.loads(body_of(app, {"at": at, "pair": Pair(1, "x")})) == \
        {"at": "Fri, 05 Jun 2026 10:00:00 GMT", "pair": {"left": 1, "right": "x"}}


@pytest.mark.parametrize("value", [2 ** 70, "\ud800", {1: "int key"}])
def test_what_orjson_refuses_or_converts_is_written_as_the_standard_library_does(app: Flask,
                                                                value: Any) -> None:
    assert body_of(app, {"v": value}) == (json.dumps({"v": value}, separators=(",", ":"))
                                          + "\n").encode()


def test_debug_mode_indents(app: Flask) -> None:
    app.debug = True
    assert body_of(app, {"a": 1}) == b'{\n  "a": 1\n}\n'


def test_dumps_and_loads(app: Flask) -> None:
    provider = app.json
    assert provider.dumps({"b": 1, "a": 2}) == '{"b":1,"a":2}'
    assert provider.dumps({"b": 1, "a": 2}, sort_keys=True) == '{"a": 2, "b": 1}'
    assert provider.loads(b'{"a": [1, 2]}') == {"a": [1, 2]}
    assert provider.loads('[1]'.encode("utf-16")) == [1]
    with pytest.raises(json.JSONDecodeError):
        provider.loads(b"{x")
