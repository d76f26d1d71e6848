"""POST /api/v1/logs and GET /api/v1/logs/query: ingest rules, filters, paging, parameters."""

from __future__ import annotations

import gzip
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from werkzeug.datastructures import MultiDict
from werkzeug.test import TestResponse

from miniobserv.config import ServerConfig
from miniobserv.errors import ValidationError
from miniobserv.model import format_time
from miniobserv.server.api import openapi
from miniobserv.server.api.logs import parse_log_query
from miniobserv.server.app import create_app
from miniobserv.server.storage.base import LogQuery
from tests.fakes import FakeRepositories
from tests.server.api.conftest import SECRET, Tokens
from tests.server.api.wire import HOST, recent

URL = "/api/v1/logs"
QUERY_URL = "/api/v1/logs/query"
T0 = datetime(2026, 6, 5, 10, 0, 0, tzinfo=UTC)


def log_entry(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"time": recent(), "host": HOST, "level": "info",
                            "message": "GET /healthz 200", "path": "/var/log/app.log"}
    item.update(overrides)
    return {key: value for key, value in item.items() if value is not None}


def log_batch(count: int = 1, host: str = HOST, batch_id: uuid.UUID | None = None,
              **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"host": host, "entries": [
        log_entry(**{"host": host, "message": f"line {i}", **overrides}) for i in range(count)]}
    if batch_id is not None:
        body["batch_id"] = str(batch_id)
    return body


def post(client: FlaskClient, tokens: Tokens, body: Any, **headers: str) -> TestResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(URL, data=data, headers={**tokens.auth("ingest"), **headers},
                       content_type="application/json")


def get(client: FlaskClient, tokens: Tokens, **params: Any) -> TestResponse:
    return client.get(QUERY_URL, query_string=params, headers=tokens.auth("read"))


def found(client: FlaskClient, tokens: Tokens, **params: Any) -> list[str]:
    response = get(client, tokens, **params)
    assert response.status_code == 200, response.data
    return [e["message"] for e in response.get_json()["entries"]]


def error_of(response: TestResponse, status: int = 400) -> str:
    assert response.status_code == status, response.data
    body = response.get_json()
    assert list(body) == ["error"]
    return str(body["error"])


def seed(client: FlaskClient, tokens: Tokens, entries: list[dict[str, Any]],
         host: str = HOST) -> None:
    assert post(client, tokens, {"host": host, "entries": entries}).status_code == 202


# --- ingest ----------------------------------------------------------------------------------


def test_accepted_batch_is_stored(client: FlaskClient, tokens: Tokens,
                                  repos: FakeRepositories) -> None:
    body = log_batch(3, labels={"unit": "nginx.service"})
    response = post(client, tokens, body)
    assert response.status_code == 202
    assert response.get_json() == {"ingested": 3}
    stored = repos.logs.stored()
    assert [r.message for r in stored] == ["line 0", "line 1", "line 2"]
    assert stored[0].path == "/var/log/app.log" and stored[0].labels == {"unit": "nginx.service"}
    assert repos.metrics.hosts() == [HOST]  # the host was seen


def test_batch_of_1000_is_accepted_1001_refused(client: FlaskClient, tokens: Tokens,
                                                repos: FakeRepositories) -> None:
    assert post(client, tokens, log_batch(1000)).get_json() == {"ingested": 1000}
    assert error_of(post(client, tokens, log_batch(1001))) == \
        "entries: must hold at most 1000 items"
    assert len(repos.logs.stored()) == 1000


@pytest.mark.parametrize("message", ["a" * 65536, "é" * 32768, "€" * 21845 + "a",
                                     "🚀" * 16384])
def test_message_of_exactly_64_kib_is_accepted(client: FlaskClient, tokens: Tokens,
                                               repos: FakeRepositories, message: str) -> None:
    assert len(message.encode()) == 65536
    assert post(client, tokens, log_batch(message=message)).status_code == 202
    assert repos.logs.stored()[0].message == message


@pytest.mark.parametrize("message", ["a" * 65537, "é" * 32768 + "a", "€" * 21845 + "é",
                                     "🚀" * 16384 + "a"])
def test_message_one_byte_over_64_kib_is_refused(client: FlaskClient, tokens: Tokens,
                                                 repos: FakeRepositories, message: str) -> None:
    assert len(message.encode()) == 65537
    assert error_of(post(client, tokens, log_batch(message=message))).startswith(
        "entries[0].message: must be at most 65536 ")
    assert repos.logs.stored() == []


BAD_ENTRIES: list[tuple[dict[str, Any], str]] = [
    ({"message": ""}, "entries[3].message: must not be empty"),
    ({"message": None}, "entries[3].message: must be a string"),
    ({"message": "a\x00b"}, "entries[3].message: must not contain NUL characters"),
    ({"level": "fatal"}, "entries[3].level: must be one of debug, info, warn, error"),
    ({"level": "WARN"}, "entries[3].level: must be one of debug, info, warn, error"),
    ({"level": None}, "entries[3].level: must be one of"),
    ({"host": "web-02"}, "entries[3].host: must equal the batch host 'web-01'"),
    ({"time": None}, "entries[3].time: is required"),
    ({"time": "2026-06-05 10:00:00"}, "entries[3].time: must be RFC 3339 with an offset"),
    ({"time": format_time(datetime.now(UTC) + timedelta(days=1))},  # built at collection: stays ahead
     "entries[3].time: is more than 10 minutes in the future"),
    ({"path": ""}, "entries[3].path: must not be empty"),
    ({"path": "/x\x00"}, "entries[3].path: must not contain NUL characters"),
    ({"path": "p" * 4097}, "entries[3].path: must be at most 4096 characters"),
    ({"path": None, "source": 5}, "entries[3].source: must be a string"),
    ({"labels": {"bad-key": "v"}}, "entries[3].labels.bad-key: label key must match"),
]


@pytest.mark.parametrize(("override", "expected"), BAD_ENTRIES, ids=[e for _, e in BAD_ENTRIES])
def test_bad_entry_names_its_path_and_stores_nothing(
        client: FlaskClient, tokens: Tokens, repos: FakeRepositories,
        override: dict[str, Any], expected: str) -> None:
    body = log_batch(5)
    item = {**body["entries"][3], **override}
    body["entries"][3] = {k: v for k, v in item.items() if v is not None or k == "message"}
    assert error_of(post(client, tokens, body)).startswith(expected)
    assert repos.logs.stored() == [] and repos.logs.insert_calls == 0


@pytest.mark.parametrize(("body", "expected"), [
    ({"host": HOST}, "entries: is required and must be a list"),
    ({"host": HOST, "entries": []}, "entries: must hold at least 1 item"),
    ({"entries": [log_entry()]}, "host: must be a string"),
    ({"host": HOST, "batch_id": "nope", "entries": [log_entry()]},
     "batch_id: must be a UUID string"),
    ([], "body: must be a JSON object"),
])
def test_bad_batch_names_the_field(client: FlaskClient, tokens: Tokens, body: Any,
                                   expected: str) -> None:
    assert error_of(post(client, tokens, body)) == expected


def test_source_is_stored_as_path_and_path_wins(client: FlaskClient, tokens: Tokens,
                                                repos: FakeRepositories) -> None:
    body = {"host": HOST, "entries": [log_entry(path=None, source="checkout-service"),
                                      log_entry(path="/a.log", source="ignored"),
                                      log_entry(path=None)]}
    assert post(client, tokens, body).status_code == 202
    assert [r.path for r in repos.logs.stored()] == ["checkout-service", "/a.log", None]
    assert [e["path"] for e in get(client, tokens).get_json()["entries"]] == \
        [None, "/a.log", "checkout-service"]


def test_entry_without_host_inherits_the_batch_host(client: FlaskClient, tokens: Tokens,
                                                    repos: FakeRepositories) -> None:
    assert post(client, tokens, {"host": "db-1", "entries": [log_entry(host=None)]}).status_code \
        == 202
    assert repos.logs.stored()[0].host == "db-1"


def test_retried_batch_id_is_stored_once(client: FlaskClient, tokens: Tokens,
                                         repos: FakeRepositories) -> None:
    body = log_batch(2, batch_id=uuid.uuid4())
    assert post(client, tokens, body).get_json() == {"ingested": 2}
    assert post(client, tokens, body).get_json() == {"ingested": 2}
    assert len(repos.logs.stored()) == 2


@pytest.mark.parametrize("change", [{"host": "web-02"}, {"message": "other"},
                                    {"level": "error"}, {"path": "/var/log/b.log"},
                                    {"path": None}, {"labels": {"app": "api"}}])
def test_reused_batch_id_with_other_entries_is_409(client: FlaskClient, tokens: Tokens,
                                                   repos: FakeRepositories,
                                                   change: dict[str, Any]) -> None:
    body = log_batch(2, batch_id=uuid.uuid4())
    assert post(client, tokens, body).status_code == 202
    assert post(client, tokens, {**body, "host": body["entries"][1]["host"]}).status_code == 202
    body["entries"][1] = log_entry(**{**body["entries"][1], **change})
    host = body["entries"][1]["host"]
    body["entries"][0]["host"] = host
    response = post(client, tokens, {**body, "host": host})
    assert error_of(response, 409) == "batch_id: already used for a different batch"
    assert [e.message for e in repos.logs.stored()] == ["line 0", "line 1"]


def test_gzip_body_is_accepted(client: FlaskClient, tokens: Tokens) -> None:
    data = gzip.compress(json.dumps(log_batch(3)).encode())
    response = post(client, tokens, data, **{"Content-Encoding": "gzip"})
    assert response.get_json() == {"ingested": 3}


def test_body_limit_is_inclusive(repos: FakeRepositories, tokens: Tokens) -> None:
    limit = 4096
    small = create_app(ServerConfig(agent_token=SECRET, auto_migrate=False,
                                    max_body_bytes=limit), repos).test_client()
    data = json.dumps(log_batch(3)).encode()
    assert post(small, tokens, data + b" " * (limit - len(data))).status_code == 202
    response = post(small, tokens, data + b" " * (limit + 1 - len(data)))
    assert error_of(response, 413) == f"body: larger than the limit of {limit} bytes"
    assert len(repos.logs.stored()) == 3


def test_storage_failure_mid_batch_stores_nothing(client: FlaskClient, tokens: Tokens,
                                                  repos: FakeRepositories) -> None:
    repos.logs.fail_after = 2
    assert error_of(post(client, tokens, log_batch(5)), 500) == "internal server error"
    assert repos.logs.stored() == []


def test_storage_down_is_503(client: FlaskClient, tokens: Tokens,
                             repos: FakeRepositories) -> None:
    repos.down = True
    assert error_of(post(client, tokens, log_batch()), 503) == "storage unavailable"
    assert error_of(get(client, tokens), 503) == "storage unavailable"


def test_scopes(client: FlaskClient, tokens: Tokens) -> None:
    body = json.dumps(log_batch())
    assert error_of(client.post(URL, data=body), 401) == "unauthorized"
    assert error_of(client.get(QUERY_URL), 401) == "unauthorized"
    assert error_of(client.post(URL, data=body, headers=tokens.auth("read")), 403) == "forbidden"
    assert error_of(client.get(QUERY_URL, headers=tokens.auth("ingest")), 403) == "forbidden"


# --- the TypeScript SDK (@kamerrezz/miniobserv 0.2.1), as it sends them ----------------------


def sdk_headers() -> dict[str, str]:
    now = int(time.time())
    token = jwt.encode({"iss": "miniobserv-agent", "iat": now, "exp": now + 86400}, SECRET,
                       algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def sdk_time(value: datetime) -> str:
    """``Date.prototype.toISOString()``: milliseconds and a Z."""
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_sdk_push_log_and_query_logs(client: FlaskClient, repos: FakeRepositories) -> None:
    """pushLog(level, message, {source}) then queryLogs({host, level, from, to, search,
    limit, cursor}): the SDK sends ``source`` and ``search`` and reads entries/next_cursor."""
    now = datetime.now(UTC)
    for i in range(3):
        body = {"host": "sdk-client", "entries": [{
            "time": sdk_time(now - timedelta(seconds=3 - i)), "host": "sdk-client",
            "level": "warn", "message": f"Payment TIMEOUT #{i}", "source": "checkout.ts"}]}
        response = client.post(URL, data=json.dumps(body), headers={
            **sdk_headers(), "Content-Type": "application/json"})
        assert response.status_code == 202 and response.get_json() == {"ingested": 1}
    params = {"host": "sdk-client", "level": "warn", "from": sdk_time(now - timedelta(minutes=1)),
              "to": sdk_time(now + timedelta(minutes=1)), "search": "timeout", "limit": "2"}
    first = client.get(QUERY_URL, query_string=params, headers=sdk_headers()).get_json()
    assert [e["message"] for e in first["entries"]] == ["Payment TIMEOUT #2", "Payment TIMEOUT #1"]
    assert first["entries"][0]["path"] == "checkout.ts"
    second = client.get(QUERY_URL, query_string={**params, "cursor": str(first["next_cursor"])},
                        headers=sdk_headers()).get_json()
    assert [e["message"] for e in second["entries"]] == ["Payment TIMEOUT #0"]
    assert second["next_cursor"] is None


# --- query: answers ------------------------------------------------------------------------


def test_answer_shape(client: FlaskClient, tokens: Tokens) -> None:
    seed(client, tokens, [log_entry(time="2026-06-05T12:00:00.250+02:00", level="error",
                                    message="boom"),
                          log_entry(path=None, message="no path")])
    body = get(client, tokens).get_json()
    assert list(body) == ["entries", "next_cursor"] and body["next_cursor"] is None
    newest, oldest = body["entries"]
    assert list(oldest) == ["id", "time", "host", "level", "message", "path"]
    assert oldest == {"id": oldest["id"], "time": "2026-06-05T10:00:00.25Z", "host": HOST,
                      "level": "error", "message": "boom", "path": "/var/log/app.log"}
    assert newest["path"] is None and newest["id"] > oldest["id"]


def test_empty_store_answers_an_empty_page(client: FlaskClient, tokens: Tokens) -> None:
    assert get(client, tokens).get_json() == {"entries": [], "next_cursor": None}


def test_filters(client: FlaskClient, tokens: Tokens) -> None:
    levels = ["debug", "info", "warn", "error"]
    seed(client, tokens, [log_entry(level=levels[i % 4], message=f"{levels[i % 4]} {i}",
                                    time=format_time(T0 + timedelta(minutes=i)))
                          for i in range(8)])
    seed(client, tokens, [log_entry(host="db-1", level="error", message="db error 50%_x",
                                    time=format_time(T0))], host="db-1")
    assert found(client, tokens, host="db-1") == ["db error 50%_x"]
    assert found(client, tokens, host=HOST, level="warn") == ["warn 6", "warn 2"]
    assert found(client, tokens, host=HOST, min_level="warn") == \
        ["error 7", "warn 6", "error 3", "warn 2"]
    assert found(client, tokens, min_level="error") == ["db error 50%_x", "error 7", "error 3"]
    assert len(found(client, tokens, min_level="debug")) == 9
    assert found(client, tokens, **{"from": format_time(T0 + timedelta(minutes=6))}) == \
        ["error 7", "warn 6"]
    assert found(client, tokens, to=format_time(T0 + timedelta(minutes=1)), host=HOST) == \
        ["info 1", "debug 0"]
    assert found(client, tokens, **{"from": format_time(T0 + timedelta(minutes=3)),
                                    "to": format_time(T0 + timedelta(minutes=3))}) == ["error 3"]
    assert found(client, tokens, q="ERROR") == ["db error 50%_x", "error 7", "error 3"]
    assert found(client, tokens, search="50%_") == ["db error 50%_x"]
    assert found(client, tokens, q="0%x") == [] and found(client, tokens, q="50%") == \
        ["db error 50%_x"]
    assert found(client, tokens, q="Warn", search="Warn") == ["warn 6", "warn 2"]


def test_empty_parameters_are_ignored(client: FlaskClient, tokens: Tokens) -> None:
    seed(client, tokens, [log_entry(message="a"), log_entry(message="b")])
    assert found(client, tokens, host="", level="", min_level="", q="", search="", limit="",
                 cursor="", **{"from": "", "to": ""}) == ["b", "a"]


def test_limit_default_clamp_and_zero(client: FlaskClient, tokens: Tokens) -> None:
    for start in range(0, 1001, 1000):
        seed(client, tokens, [log_entry(message=f"line {i}") for i in range(start, start + 1000)
                              if i <= 1000])
    assert len(found(client, tokens)) == 100
    assert len(found(client, tokens, limit="0")) == 100  # as the first MiniObserv: the default
    assert found(client, tokens, limit="1") == ["line 1000"]
    assert len(found(client, tokens, limit="1000")) == 1000
    for big in ("1001", "5000", "9" * 40):
        body = get(client, tokens, limit=big).get_json()
        assert len(body["entries"]) == 1000 and body["next_cursor"] is not None
    assert len(found(client, tokens, limit="0001")) == 1


def test_paging_250_in_3_pages_while_logs_arrive(client: FlaskClient, tokens: Tokens) -> None:
    seed(client, tokens, [log_entry(message=f"old {i}") for i in range(250)])
    seen: list[str] = []
    pages, cursor = 0, None
    while True:
        params = {"limit": "100"} if cursor is None else {"limit": "100", "cursor": cursor}
        body = get(client, tokens, **params).get_json()
        seen += [e["message"] for e in body["entries"]]
        pages += 1
        seed(client, tokens, [log_entry(message=f"new {pages}-{i}") for i in range(40)])
        if body["next_cursor"] is None:
            break
        assert body["next_cursor"] == body["entries"][-1]["id"]
        cursor = body["next_cursor"]
    assert pages == 3
    assert seen == [f"old {i}" for i in range(249, -1, -1)]


def test_cursor_zero_is_the_first_page(client: FlaskClient, tokens: Tokens) -> None:
    seed(client, tokens, [log_entry(message="a"), log_entry(message="b")])
    assert found(client, tokens, cursor="0") == ["b", "a"]
    last_id = get(client, tokens).get_json()["entries"][0]["id"]
    assert found(client, tokens, cursor=str(last_id)) == ["a"]
    assert found(client, tokens, cursor="1") == []


# --- query: parameters -----------------------------------------------------------------------


def test_parse_defaults_and_every_option() -> None:
    assert parse_log_query(MultiDict()) == LogQuery()
    query = parse_log_query(MultiDict({
        "host": " web-01 ", "min_level": "warn", "from": "2026-06-05T12:00:00 02:00",
        "to": "2026-06-05T11:00:00Z", "q": "a%b", "limit": "7", "cursor": "42"}))
    assert query == LogQuery(host="web-01", min_level="warn", start=T0,
                             end=T0 + timedelta(hours=1), search="a%b", limit=7, cursor=42)
    assert parse_log_query(MultiDict({"cursor": str(2**63 - 1)})).cursor == 2**63 - 1


BAD_PARAMS: list[tuple[dict[str, str], str]] = [
    ({"limit": "-1"}, "limit: must not be negative"),
    ({"limit": "-0"}, "limit: must not be negative"),
    ({"limit": "abc"}, "limit: must be an integer"),
    ({"limit": "1.5"}, "limit: must be an integer"),
    ({"limit": "+5"}, "limit: must be an integer"),
    ({"limit": " 5"}, "limit: must be an integer"),
    ({"limit": "1e3"}, "limit: must be an integer"),
    ({"limit": "١٢"}, "limit: must be an integer"),  # Arabic-Indic digits int() would take
    ({"cursor": "-3"}, "cursor: must not be negative"),
    ({"cursor": "x"}, "cursor: must be an integer"),
    ({"cursor": "0x10"}, "cursor: must be an integer"),
    ({"cursor": str(2**63)}, "cursor: is not a cursor this server gave"),
    ({"cursor": "9" * 5000}, "cursor: is not a cursor this server gave"),
    ({"level": "fatal"}, "level: must be one of debug, info, warn, error"),
    ({"level": "ERROR"}, "level: must be one of"),
    ({"min_level": "critical"}, "min_level: must be one of debug, info, warn, error"),
    ({"level": "info", "min_level": "warn"}, "min_level: give level or min_level, not both"),
    ({"from": "yesterday"}, "from: must be RFC 3339"),
    ({"to": "2026-06-05T10:00:00"}, "to: must be RFC 3339 with an offset"),
    ({"to": "2026-13-05T10:00:00Z"}, "to: is not a valid time"),
    ({"from": "2026-06-05T10:00:00.000001Z", "to": "2026-06-05T10:00:00Z"},
     "from: must not be after to"),
    ({"q": "a", "search": "b"}, "search: give q or search, not both"),
    ({"q": "a\x00"}, "q: must not contain NUL characters"),
    ({"search": "\x00"}, "search: must not contain NUL characters"),
    ({"q": "x" * 65537}, "q: must be at most 65536 characters"),
    ({"host": "h" * 254}, "host: must be at most 253 characters"),
    ({"host": "a\x00b"}, "host: must not contain NUL characters"),
]


@pytest.mark.parametrize(("params", "expected"), BAD_PARAMS, ids=[e for _, e in BAD_PARAMS])
def test_bad_parameter_is_named(params: dict[str, str], expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_log_query(MultiDict(params))
    assert str(info.value).startswith(expected)


@pytest.mark.parametrize(("params", "expected"), BAD_PARAMS[::4], ids=[e for _, e in
                                                                      BAD_PARAMS[::4]])
def test_bad_parameter_is_a_400_over_http(client: FlaskClient, tokens: Tokens,
                                          params: dict[str, str], expected: str) -> None:
    assert error_of(get(client, tokens, **params)).startswith(expected)


def test_search_of_the_longest_message_is_accepted() -> None:
    assert parse_log_query(MultiDict({"q": "x" * 65536})).search == "x" * 65536


# --- OpenAPI -----------------------------------------------------------------------------------


def test_openapi_describes_both_endpoints() -> None:
    document = openapi.build_document()
    validate(document)
    post_op = document["paths"]["/api/v1/logs"]["post"]
    assert post_op["x-token-scope"] == "ingest"
    assert post_op["requestBody"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/LogBatch"}
    get_op = document["paths"]["/api/v1/logs/query"]["get"]
    assert get_op["x-token-scope"] == "read"
    assert [p["name"] for p in get_op["parameters"]] == \
        ["host", "level", "min_level", "from", "to", "q", "search", "limit", "cursor"]
    assert not any(p["required"] for p in get_op["parameters"])
    schemas = document["components"]["schemas"]
    assert schemas["LogPage"]["required"] == ["entries", "next_cursor"]
    assert set(schemas["StoredLogEntry"]["properties"]) == \
        {"id", "time", "host", "level", "message", "path"}
    assert schemas["LogEntry"]["properties"]["level"]["enum"] == ["debug", "info", "warn",
                                                                  "error"]
