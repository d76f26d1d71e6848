"""POST /api/v1/metrics: validation with field paths, atomicity, dedup, body limits, gzip."""

from __future__ import annotations

import gzip
import io
import json
import os
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import EnvironBuilder, TestResponse, run_wsgi_app

from miniobserv.config import ServerConfig
from miniobserv.model import format_time
from miniobserv.server.app import create_app
from tests.fakes import FakeRepositories
from tests.server.api.conftest import SECRET, Tokens
from tests.server.api.wire import HOST, batch, metric, recent

URL = "/api/v1/metrics"
LIMIT = 4096


def post_raw(client: FlaskClient, tokens: Tokens, data: bytes, gzipped: bool = False,
             headers: dict[str, str] | None = None) -> TestResponse:
    all_headers = {**tokens.auth("ingest"), **(headers or {})}
    if gzipped:
        all_headers["Content-Encoding"] = "gzip"
    return client.post(URL, data=data, headers=all_headers,
                       content_type="application/json")


def post(client: FlaskClient, tokens: Tokens, body: Any) -> TestResponse:
    return post_raw(client, tokens, json.dumps(body).encode())


def error_of(response: TestResponse, status: int = 400) -> str:
    assert response.status_code == status, response.data
    assert response.is_json
    body = response.get_json()
    assert list(body) == ["error"]
    return str(body["error"])


# --- happy paths -----------------------------------------------------------------------------


def test_accepted_batch_is_stored(client: FlaskClient, tokens: Tokens,
                                  repos: FakeRepositories) -> None:
    response = post(client, tokens, batch(3))
    assert response.status_code == 202
    assert response.get_json() == {"ingested": 3}
    stored = repos.metrics.stored()
    assert [m.value for m in stored] == [0.0, 1.0, 2.0]
    assert stored[0].labels == {"core": "total"} and stored[0].host == HOST
    assert repos.metrics.hosts() == [HOST]


def test_sdk_request_is_accepted(client: FlaskClient, repos: FakeRepositories) -> None:
    """What @kamerrezz/miniobserv 0.2.1 pushMetric sends: its own token, ms times, no labels."""
    now = int(time.time())
    import jwt

    token = jwt.encode({"iss": "miniobserv-agent", "iat": now, "exp": now + 86400}, SECRET,
                       algorithm="HS256")
    iso = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body = {"host": "sdk-client", "metrics": [
        {"time": iso, "host": "sdk-client", "name": "cpu.usage_pct", "value": 72.4}]}
    response = client.post(URL, data=json.dumps(body), headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert response.status_code == 202
    assert response.get_json() == {"ingested": 1}
    assert repos.metrics.stored()[0].labels == {}


def test_metric_without_host_inherits_the_batch_host(client: FlaskClient, tokens: Tokens,
                                                     repos: FakeRepositories) -> None:
    response = post(client, tokens, {"host": "db-1", "metrics": [metric(host=None)]})
    assert response.status_code == 202
    assert repos.metrics.stored()[0].host == "db-1"


def test_content_type_is_not_required(client: FlaskClient, tokens: Tokens) -> None:
    response = client.post(URL, data=json.dumps(batch()), headers=tokens.auth())
    assert response.status_code == 202


def test_batch_of_1000_is_accepted_1001_refused(client: FlaskClient, tokens: Tokens,
                                                repos: FakeRepositories) -> None:
    assert post(client, tokens, batch(1000)).get_json() == {"ingested": 1000}
    assert error_of(post(client, tokens, batch(1001))) == \
        "metrics: must hold at most 1000 items"
    assert len(repos.metrics.stored()) == 1000


def test_retried_batch_id_is_stored_once(client: FlaskClient, tokens: Tokens,
                                         repos: FakeRepositories) -> None:
    body = batch(2, batch_id=uuid.uuid4())
    assert post(client, tokens, body).get_json() == {"ingested": 2}
    assert post(client, tokens, body).get_json() == {"ingested": 2}
    assert len(repos.metrics.stored()) == 2


def test_retry_reserialised_and_gzipped_is_recognised(client: FlaskClient, tokens: Tokens,
                                                      repos: FakeRepositories) -> None:
    """The digest is over the validated points, not the bytes: another key order, another
    UTC offset for the same instant, another label order and gzip are the same batch."""
    body = batch(2, batch_id=uuid.uuid4(), labels={"core": "total", "mount": "/"})
    assert post(client, tokens, body).get_json() == {"ingested": 2}
    retry = {"batch_id": body["batch_id"], "host": HOST, "metrics": [
        {"labels": dict(reversed(m["labels"].items())), "value": int(m["value"]),
         "name": m["name"], "host": HOST,
         "time": datetime.fromisoformat(m["time"]).astimezone(
             timezone(timedelta(hours=5, minutes=45))).isoformat()}
        for m in body["metrics"]]}
    data = gzip.compress(json.dumps(retry, indent=1).encode())
    response = post_raw(client, tokens, data, gzipped=True)
    assert (response.status_code, response.get_json()) == (202, {"ingested": 2})
    assert len(repos.metrics.stored()) == 2


def test_reused_batch_id_from_another_host_is_409(client: FlaskClient, tokens: Tokens,
                                                  repos: FakeRepositories,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """The repro of the silent loss: h2's batch with h1's batch_id was a 202, never stored."""
    batch_id = uuid.uuid4()
    assert post(client, tokens, batch(1, host="h1", batch_id=batch_id)).status_code == 202
    response = post(client, tokens, batch(2, host="h2", batch_id=batch_id))
    assert error_of(response, 409) == "batch_id: already used for a different batch"
    assert [m.host for m in repos.metrics.stored()] == ["h1"]
    assert str(batch_id) in caplog.text
    exposition = client.get("/metrics", headers=tokens.auth("read")).get_data(as_text=True)
    assert 'miniobserv_rejected_batches_total{kind="metrics",status="409"} 1.0' in exposition


@pytest.mark.parametrize("change", [{"value": 99.0}, {"labels": {"core": "0"}},
                                    {"time": recent(seconds_ago=30)},
                                    {"name": "mem.used_pct"}])
def test_reused_batch_id_with_other_points_is_409(client: FlaskClient, tokens: Tokens,
                                                  repos: FakeRepositories,
                                                  change: dict[str, Any]) -> None:
    body = batch(2, batch_id=uuid.uuid4())
    assert post(client, tokens, body).status_code == 202
    body["metrics"][1].update(change)
    assert error_of(post(client, tokens, body), 409).startswith("batch_id: ")
    assert len(repos.metrics.stored()) == 2


def test_custom_name_is_accepted(client: FlaskClient, tokens: Tokens) -> None:
    response = post(client, tokens, batch(name="custom.shop.orders_total", labels=None))
    assert response.status_code == 202


def test_time_with_offset_is_stored_in_utc(client: FlaskClient, tokens: Tokens,
                                           repos: FakeRepositories) -> None:
    instant = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    local = instant.astimezone(timezone(-timedelta(hours=3, minutes=30)))
    assert local.isoformat().endswith("-03:30")
    assert post(client, tokens, batch(time=local.isoformat())).status_code == 202
    stored = repos.metrics.stored()[0].time
    assert stored == instant and stored.utcoffset() == timedelta(0)


# --- bad batches: every answer names the field; nothing is stored -----------------------------

BAD_METRICS: list[tuple[dict[str, Any], str]] = [
    ({"value": True}, "metrics[3].value: must be a number"),
    ({"value": False}, "metrics[3].value: must be a number"),
    ({"value": "12.5"}, "metrics[3].value: must be a number"),
    ({"value": [1]}, "metrics[3].value: must be a number"),
    ({"value": None}, "metrics[3].value: is required"),
    ({"time": None}, "metrics[3].time: is required"),
    ({"name": None}, "metrics[3].name: is required"),
    ({"time": "2026-06-05T10:00:00"}, "metrics[3].time: must be RFC 3339 with an offset"),
    ({"time": "2026-06-05 10:00:00Z"}, "metrics[3].time: must be RFC 3339 with an offset"),
    ({"time": 1780653600}, "metrics[3].time: must be an RFC 3339 string"),
    ({"time": "2026-02-30T10:00:00Z"}, "metrics[3].time: is not a valid time"),
    ({"time": format_time(datetime.now(UTC) + timedelta(days=1))},  # built at collection: stays ahead
     "metrics[3].time: is more than 10 minutes in the future"),
    ({"name": "cpu_usage_pct"}, "metrics[3].name: unknown metric name 'cpu_usage_pct'"),
    ({"name": "CPU.usage_pct"}, "metrics[3].name: unknown metric name"),
    ({"name": "custom."}, "metrics[3].name: unknown metric name"),
    ({"name": "custom.a\x00b"}, "metrics[3].name: unknown metric name"),
    ({"name": "custom." + "a" * 122}, "metrics[3].name: unknown metric name"),
    ({"host": "other"}, "metrics[3].host: must equal the batch host 'web-01'"),
    ({"labels": {f"k{i}": "v" for i in range(17)}},
     "metrics[3].labels: must have at most 16 labels"),
    ({"labels": {"k" * 65: "v"}}, "metrics[3].labels." + "k" * 64 + ": label key must"),
    ({"labels": {"1core": "v"}}, "metrics[3].labels.1core: label key must"),
    ({"labels": {"core": "v" * 257}},
     "metrics[3].labels.core: must be at most 256 characters"),
    ({"labels": {"core": ""}}, "metrics[3].labels.core: must not be empty"),
    ({"labels": {"core": 1}}, "metrics[3].labels.core: must be a string"),
    ({"labels": {"core": "a\x00b"}},
     "metrics[3].labels.core: must not contain NUL characters"),
    ({"labels": ["core"]}, "metrics[3].labels: must be an object"),
]


@pytest.mark.parametrize(("override", "expected"), BAD_METRICS,
                         ids=[e for _, e in BAD_METRICS])
def test_bad_metric_names_its_path_and_stores_nothing(
        client: FlaskClient, tokens: Tokens, repos: FakeRepositories,
        override: dict[str, Any], expected: str) -> None:
    body = batch(5)
    item = {**body["metrics"][3], **override}
    body["metrics"][3] = {k: v for k, v in item.items() if v is not None}
    assert error_of(post(client, tokens, body)).startswith(expected)
    assert repos.metrics.stored() == []
    assert repos.metrics.insert_calls == 0


def test_limits_at_their_edges_are_accepted(client: FlaskClient, tokens: Tokens) -> None:
    body = batch(1, host="h" * 253, name="custom." + "a" * 121,
                 labels={**{f"k{i}": "v" for i in range(15)}, "k" * 64: "v" * 256},
                 time=format_time(datetime.now(UTC) + timedelta(minutes=9)))
    assert post(client, tokens, body).status_code == 202


BAD_BATCHES: list[tuple[Any, str]] = [
    ([], "body: must be a JSON object"),
    ("text", "body: must be a JSON object"),
    ({"metrics": [metric()]}, "host: must be a string"),
    ({"host": "  ", "metrics": [metric()]}, "host: must not be empty"),
    ({"host": "h" * 254, "metrics": [metric()]}, "host: must be at most 253 characters"),
    ({"host": "a\x00b", "metrics": [metric()]}, "host: must not contain NUL characters"),
    ({"host": HOST}, "metrics: is required and must be a list"),
    ({"host": HOST, "metrics": {}}, "metrics: is required and must be a list"),
    ({"host": HOST, "metrics": []}, "metrics: must hold at least 1 item"),
    ({"host": HOST, "metrics": [1]}, "metrics[0]: must be an object"),
    ({"host": HOST, "batch_id": "nope", "metrics": [metric()]},
     "batch_id: must be a UUID string"),
    ({"host": HOST, "batch_id": 5, "metrics": [metric()]}, "batch_id: must be a UUID string"),
]


@pytest.mark.parametrize(("body", "expected"), BAD_BATCHES, ids=[e for _, e in BAD_BATCHES])
def test_bad_batch_names_the_field(client: FlaskClient, tokens: Tokens,
                                   repos: FakeRepositories, body: Any, expected: str) -> None:
    assert error_of(post(client, tokens, body)) == expected
    assert repos.metrics.stored() == []


# --- JSON that is not acceptable --------------------------------------------------------------


def _text_with_value(literal: str) -> bytes:
    text = json.dumps(batch(1, value=123456789))
    return text.replace("123456789", literal).encode()


@pytest.mark.parametrize(("literal", "expected"), [
    ("NaN", "body: NaN is not valid JSON"),
    ("Infinity", "body: Infinity is not valid JSON"),
    ("-Infinity", "body: -Infinity is not valid JSON"),
    ("1e400", "metrics[0].value: must be finite"),
    ("-1e400", "metrics[0].value: must be finite"),
    ("1" + "0" * 400, "metrics[0].value: is out of range"),
    ("9" * 5000, "body: has a number with too many digits"),
    ("0x10", "body: is not valid JSON"),
    ("true", "metrics[0].value: must be a number"),
    ("null", "metrics[0].value: must be a number"),
])
def test_absurd_values_are_400(client: FlaskClient, tokens: Tokens, repos: FakeRepositories,
                               literal: str, expected: str) -> None:
    assert error_of(post_raw(client, tokens, _text_with_value(literal))).startswith(expected)
    assert repos.metrics.stored() == []


def test_big_finite_number_is_accepted(client: FlaskClient, tokens: Tokens) -> None:
    assert post_raw(client, tokens, _text_with_value("1e100")).status_code == 202
    assert post_raw(client, tokens, _text_with_value("-1e100")).status_code == 202


def test_a_number_past_the_bound_is_400(client: FlaskClient, tokens: Tokens) -> None:
    assert error_of(post_raw(client, tokens, _text_with_value("1e300"))) == \
        "metrics[0].value: must be within ±1e+100"


@pytest.mark.parametrize(("data", "expected"), [
    (b"", "body: is empty"),
    (b"   \n", "body: is empty"),
    (b"{not json", "body: is not valid JSON"),
    (b'{"host": "web-01"', "body: is not valid JSON"),
    (b'{"host": "web-01"} trailing', "body: is not valid JSON"),
    (b"\xff\xfe\xfa{}", "body: is not valid"),
    (b'{"host": "\xc3\x28"}', "body: is not valid"),
    (b"[" * 100_000 + b"]" * 100_000, "body: JSON is nested too deeply"),
    (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "body: JSON is nested too deeply"),
])
def test_malformed_json_is_400(client: FlaskClient, tokens: Tokens, data: bytes,
                               expected: str) -> None:
    assert error_of(post_raw(client, tokens, data)).startswith(expected)


def test_moderately_deep_nesting_is_refused_by_the_model(client: FlaskClient,
                                                        tokens: Tokens) -> None:
    deep: Any = "x"
    for _ in range(500):
        deep = {"k": deep}
    response = post(client, tokens, batch(labels={"core": deep}))
    assert error_of(response) == "metrics[0].labels.core: must be a string"


def test_lone_surrogate_is_refused(client: FlaskClient, tokens: Tokens) -> None:
    data = json.dumps(batch(labels={"core": "PLACEHOLDER"})).replace("PLACEHOLDER", "\\ud800")
    assert error_of(post_raw(client, tokens, data.encode())).startswith(
        "metrics[0].labels.core: ")


def test_storage_failure_mid_batch_stores_nothing(client: FlaskClient, tokens: Tokens,
                                                  repos: FakeRepositories) -> None:
    repos.metrics.fail_after = 2
    response = post(client, tokens, batch(5))
    assert error_of(response, 500) == "internal server error"
    assert repos.metrics.stored() == []


def test_storage_down_is_503(client: FlaskClient, tokens: Tokens,
                             repos: FakeRepositories) -> None:
    repos.down = True
    assert error_of(post(client, tokens, batch()), 503) == "storage unavailable"


# --- body size limits, raw and gzip ------------------------------------------------------------


@pytest.fixture
def small(repos: FakeRepositories) -> FlaskClient:
    """A client of an app whose MAX_BODY_BYTES is LIMIT."""
    config = ServerConfig(agent_token=SECRET, auto_migrate=False, max_body_bytes=LIMIT)
    return create_app(config, repos).test_client()


def body_of_size(size: int) -> bytes:
    """A valid batch padded with JSON whitespace to exactly ``size`` bytes."""
    data = json.dumps(batch(3)).encode()
    assert len(data) <= size
    return data + b" " * (size - len(data))


def test_body_of_exactly_the_limit_is_accepted(small: FlaskClient, tokens: Tokens) -> None:
    assert post_raw(small, tokens, body_of_size(LIMIT)).status_code == 202


def test_body_one_byte_over_the_limit_is_413(small: FlaskClient, tokens: Tokens,
                                             repos: FakeRepositories) -> None:
    message = error_of(post_raw(small, tokens, body_of_size(LIMIT + 1)), 413)
    assert message == f"body: larger than the limit of {LIMIT} bytes"
    assert repos.metrics.stored() == []


def test_default_limit_is_8_mib(client: FlaskClient, tokens: Tokens) -> None:
    assert post_raw(client, tokens, body_of_size(8 * 1024 * 1024)).status_code == 202
    assert post_raw(client, tokens, body_of_size(8 * 1024 * 1024 + 1)).status_code == 413


def test_gzip_body_decompressing_to_exactly_the_limit_is_accepted(
        small: FlaskClient, tokens: Tokens) -> None:
    data = gzip.compress(body_of_size(LIMIT))
    assert post_raw(small, tokens, data, gzipped=True).get_json() == {"ingested": 3}


def test_gzip_body_decompressing_one_byte_over_is_413(small: FlaskClient,
                                                      tokens: Tokens) -> None:
    data = gzip.compress(body_of_size(LIMIT + 1))
    assert len(data) < LIMIT
    assert error_of(post_raw(small, tokens, data, gzipped=True), 413).startswith("body: ")


def test_gzip_bomb_is_413(client: FlaskClient, tokens: Tokens) -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b" " * (1 << 20)
    data = b"".join([compressor.compress(zeros) for _ in range(64)]) + compressor.flush()
    assert len(data) < 100_000  # 64 MiB of spaces in well under 100 kB
    assert post_raw(client, tokens, data, gzipped=True).status_code == 413


def test_compressed_body_itself_over_the_limit_is_413(small: FlaskClient,
                                                      tokens: Tokens) -> None:
    data = gzip.compress(os.urandom(LIMIT * 2))
    assert error_of(post_raw(small, tokens, data, gzipped=True), 413).startswith("body: ")


@pytest.mark.parametrize(("data", "expected"), [
    (b"definitely not gzip", "body: is not valid gzip"),
    (gzip.compress(b'{"host": "web-01"}')[:-6], "body: gzip data is truncated"),
    (gzip.compress(b'{"host": "web-01"}')[:10], "body: gzip data is truncated"),
    (b"", "body: gzip data is truncated"),
    (gzip.compress(b"{}") + b"garbage", "body: is not valid gzip"),
    (zlib.compress(b"{}"), "body: is not valid gzip"),
])
def test_corrupt_gzip_is_400(client: FlaskClient, tokens: Tokens, data: bytes,
                             expected: str) -> None:
    assert error_of(post_raw(client, tokens, data, gzipped=True)) == expected


def test_corrupt_gzip_crc_is_400(client: FlaskClient, tokens: Tokens) -> None:
    data = bytearray(gzip.compress(json.dumps(batch()).encode()))
    data[-8] ^= 0xFF  # CRC32 of the trailer
    assert error_of(post_raw(client, tokens, bytes(data), gzipped=True)) == \
        "body: is not valid gzip"


def test_multi_member_gzip_is_accepted(client: FlaskClient, tokens: Tokens) -> None:
    text = json.dumps(batch(2)).encode()
    data = gzip.compress(text[:20]) + gzip.compress(text[20:])
    assert post_raw(client, tokens, data, gzipped=True).get_json() == {"ingested": 2}


def test_gzip_trailing_zero_padding_is_tolerated(client: FlaskClient, tokens: Tokens) -> None:
    data = gzip.compress(json.dumps(batch()).encode()) + b"\x00" * 8
    assert post_raw(client, tokens, data, gzipped=True).status_code == 202


def test_content_encoding_is_case_insensitive(client: FlaskClient, tokens: Tokens) -> None:
    data = gzip.compress(json.dumps(batch()).encode())
    response = post_raw(client, tokens, data, headers={"Content-Encoding": "GZIP"})
    assert response.status_code == 202


def test_gzip_without_content_encoding_is_not_json(client: FlaskClient,
                                                   tokens: Tokens) -> None:
    data = gzip.compress(json.dumps(batch()).encode())
    assert error_of(post_raw(client, tokens, data)).startswith("body: is not valid")


@pytest.mark.parametrize("encoding", ["br", "deflate", "compress"])
def test_unsupported_encoding_is_415(client: FlaskClient, tokens: Tokens,
                                     encoding: str) -> None:
    response = post_raw(client, tokens, b"{}", headers={"Content-Encoding": encoding})
    assert error_of(response, 415).startswith("Content-Encoding: ")


def _run_raw(client: FlaskClient, environ: dict[str, Any]) -> tuple[int, bytes]:
    """Call the app with a hand-made environ (the test client would add Content-Length)."""
    app_iter, status, _ = run_wsgi_app(client.application, environ)
    return int(status.split()[0]), b"".join(app_iter)


def _environ(tokens: Tokens, stream: Any) -> dict[str, Any]:
    builder = EnvironBuilder(path=URL, method="POST", headers=list(tokens.auth().items()))
    environ = builder.get_environ()
    environ["wsgi.input"] = stream
    return environ


def _post_chunked(client: FlaskClient, tokens: Tokens, data: bytes) -> tuple[int, bytes]:
    """A body without Content-Length, as a chunked request reaches the app under gunicorn."""
    environ = _environ(tokens, io.BytesIO(data))
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input_terminated"] = True
    return _run_raw(client, environ)


def test_chunked_body_of_exactly_the_limit_is_accepted(small: FlaskClient,
                                                       tokens: Tokens) -> None:
    assert _post_chunked(small, tokens, body_of_size(LIMIT)) == (202, b'{"ingested":3}\n')


def test_chunked_body_over_the_limit_is_413(small: FlaskClient, tokens: Tokens) -> None:
    status, data = _post_chunked(small, tokens, body_of_size(LIMIT + 1))
    assert status == 413
    assert json.loads(data) == {"error": f"body: larger than the limit of {LIMIT} bytes"}


def test_chunked_gzip_bomb_is_413(small: FlaskClient, tokens: Tokens) -> None:
    environ = _environ(tokens, io.BytesIO(gzip.compress(b" " * (LIMIT * 100))))
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input_terminated"] = True
    environ["HTTP_CONTENT_ENCODING"] = "gzip"
    assert _run_raw(small, environ)[0] == 413


def test_content_length_over_the_limit_is_413_before_reading(small: FlaskClient,
                                                             tokens: Tokens) -> None:
    class Unreadable(io.RawIOBase):
        def readinto(self, buffer: Any) -> int:
            raise AssertionError("the body must not be read")

    environ = _environ(tokens, Unreadable())
    environ["CONTENT_LENGTH"] = str(LIMIT + 1)
    status, data = _run_raw(small, environ)
    assert status == 413
    assert json.loads(data)["error"].startswith("body: ")


def test_recent_helper_is_in_the_past() -> None:
    assert recent() < format_time(datetime.now(UTC))
