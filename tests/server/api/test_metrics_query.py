"""GET /api/v1/metrics/query and /hosts: parameter validation and answer shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.datastructures import MultiDict

from miniobserv.errors import ValidationError
from miniobserv.model import format_time, parse_metric_batch
from miniobserv.server.api.metrics import parse_label_filters, parse_metric_query
from miniobserv.server.storage.base import AGGREGATES, BUCKETS, MetricQuery
from tests.fakes import FakeRepositories
from tests.server.api.conftest import Tokens

URL = "/api/v1/metrics/query"
T0 = datetime(2026, 6, 5, 10, 0, 0, tzinfo=UTC)
BASE = {"host": "web-01", "name": "cpu.usage_pct", "from": "2026-06-05T10:00:00Z",
        "to": "2026-06-05T11:00:00Z"}


def args(**overrides: Any) -> MultiDict[str, str]:
    """Query parameters: BASE with overrides; None removes a key, a list repeats it."""
    merged = {**BASE, **overrides}
    items: list[tuple[str, str]] = []
    for key, value in merged.items():
        if value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            items.append((key, item))
    return MultiDict(items)


def store(repos: FakeRepositories, points: list[tuple[datetime, float, dict[str, str]]],
          host: str = "web-01", name: str = "cpu.usage_pct") -> None:
    body = {"host": host, "metrics": [
        {"time": format_time(t), "name": name, "value": v, "labels": labels}
        for t, v, labels in points]}
    repos.metrics.insert_batch(parse_metric_batch(body, now=T0 + timedelta(days=1)))


def get(client: FlaskClient, tokens: Tokens, **overrides: Any) -> Any:
    response = client.get(URL, query_string=args(**overrides), headers=tokens.auth("read"))
    return response


# --- parse_metric_query: the pure function ---------------------------------------------------


def test_defaults() -> None:
    query = parse_metric_query(args())
    assert query == MetricQuery(host="web-01", name="cpu.usage_pct", start=T0,
                                end=T0 + timedelta(hours=1), bucket="1m", agg="avg",
                                labels=(), group_by=None)


def test_every_option() -> None:
    query = parse_metric_query(args(bucket="5m", agg="p95", group_by="core",
                                    label=["core:total", "path:C:/x", "core:total"]))
    assert (query.bucket, query.agg, query.group_by) == ("5m", "p95", "core")
    assert query.labels == (("core", "total"), ("path", "C:/x"))


@pytest.mark.parametrize("bucket", list(BUCKETS))
def test_every_bucket_is_accepted(bucket: str) -> None:
    assert parse_metric_query(args(bucket=bucket)).bucket_seconds == BUCKETS[bucket]


@pytest.mark.parametrize("agg", AGGREGATES)
def test_every_aggregate_is_accepted(agg: str) -> None:
    assert parse_metric_query(args(agg=agg)).agg == agg


def test_offsets_are_converted_to_utc() -> None:
    query = parse_metric_query(args(**{"from": "2026-06-05T12:00:00+02:00"}))
    assert query.start == T0


def test_unescaped_plus_arrives_as_space_and_is_repaired() -> None:
    query = parse_metric_query(args(**{"from": "2026-06-05T12:00:00 02:00"}))
    assert query.start == T0


def test_range_of_exactly_30_days_is_accepted() -> None:
    query = parse_metric_query(args(to=format_time(T0 + timedelta(days=30))))
    assert query.end - query.start == timedelta(days=30)


def test_host_is_trimmed() -> None:
    assert parse_metric_query(args(host="  web-01 ")).host == "web-01"


BAD_PARAMS: list[tuple[dict[str, Any], str]] = [
    ({"host": ""}, "host: must not be empty"),
    ({"host": "h" * 254}, "host: must be at most 253 characters"),
    ({"name": None}, "name: is required"),
    ({"name": "cpu_usage_pct"}, "name: unknown metric name"),
    ({"from": None}, "from: is required"),
    ({"to": None}, "to: is required"),
    ({"from": "yesterday"}, "from: must be RFC 3339"),
    ({"from": "2026-06-05T10:00:00"}, "from: must be RFC 3339 with an offset"),
    ({"to": "2026-06-05"}, "to: must be RFC 3339"),
    ({"to": "2026-13-05T10:00:00Z"}, "to: is not a valid time"),
    ({"to": BASE["from"]}, "from: must be before to"),
    ({"from": BASE["to"], "to": BASE["from"]}, "from: must be before to"),
    ({"to": format_time(T0 + timedelta(days=30, seconds=1))}, "to: the range from..to must "
                                                              "be at most 30 days"),
    ({"bucket": "2m"}, "bucket: must be one of 10s, 1m, 5m, 15m, 1h, 6h, 1d"),
    ({"bucket": ""}, "bucket: must be one of"),
    ({"bucket": "1M"}, "bucket: must be one of"),
    ({"agg": "median"}, "agg: must be one of avg, min, max, sum, count, last, p50, p95, p99"),
    ({"agg": "AVG"}, "agg: must be one of"),
    ({"label": "core"}, "label: 'core' must be key:value"),
    ({"label": ":total"}, "label: '' is not a label key"),
    ({"label": "1core:total"}, "label: '1core' is not a label key"),
    ({"label": "k" * 65 + ":v"}, "label: "),
    ({"label": "core:"}, "label: the value of 'core' must be 1 to 256 characters"),
    ({"label": "core:" + "v" * 257}, "label: the value of 'core' must be 1 to 256"),
    ({"label": "core:a\x00b"}, "label: the value of 'core'"),
    ({"label": [f"k{i}:v" for i in range(17)]}, "label: at most 16 label filters"),
    ({"group_by": ""}, "group_by: must be host or a label key"),
    ({"group_by": "co-re"}, "group_by: must be host or a label key"),
    ({"group_by": "k" * 65}, "group_by: must be host or a label key"),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD_PARAMS,
                         ids=[e for _, e in BAD_PARAMS])
def test_bad_parameter_is_named(overrides: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_metric_query(args(**overrides))
    assert str(info.value).startswith(expected)


def test_label_key_of_64_characters_is_accepted() -> None:
    assert parse_label_filters(["k" * 64 + ":" + "v" * 256]) == (("k" * 64, "v" * 256),)


def test_16_label_filters_are_accepted() -> None:
    assert len(parse_label_filters([f"k{i}:v" for i in range(16)])) == 16


# --- through HTTP ----------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "expected"), BAD_PARAMS[::3],
                         ids=[e for _, e in BAD_PARAMS[::3]])
def test_bad_parameter_is_a_400_naming_it(client: FlaskClient, tokens: Tokens,
                                          overrides: dict[str, Any], expected: str) -> None:
    response = get(client, tokens, **overrides)
    assert response.status_code == 400
    assert response.get_json()["error"].startswith(expected)


def test_no_data_answers_empty_points(client: FlaskClient, tokens: Tokens) -> None:
    response = get(client, tokens)
    assert response.status_code == 200
    assert response.get_json() == {"host": "web-01", "name": "cpu.usage_pct", "bucket": "1m",
                                   "agg": "avg", "points": []}


def test_points_are_epoch_aligned_ascending_and_windowed(
        client: FlaskClient, tokens: Tokens, repos: FakeRepositories) -> None:
    total = {"core": "total"}
    store(repos, [
        (T0 + timedelta(minutes=2, seconds=10), 7.0, total),
        (T0 + timedelta(seconds=40), 2.0, total),
        (T0 + timedelta(seconds=50), 4.0, total),
        (T0 + timedelta(minutes=1, seconds=59, microseconds=999999), 5.0, total),
        (T0 + timedelta(seconds=29, microseconds=999999), 100.0, total),  # before from
        (T0 + timedelta(minutes=3), 9.0, total),  # exactly at to: inside
        (T0 + timedelta(minutes=3, microseconds=1), 100.0, total),  # after to
    ])
    body = get(client, tokens, **{"from": format_time(T0 + timedelta(seconds=30)),
                                  "to": format_time(T0 + timedelta(minutes=3))}).get_json()
    assert body["points"] == [
        {"time": "2026-06-05T10:00:00Z", "value": 3.0},  # bucket starts before from
        {"time": "2026-06-05T10:01:00Z", "value": 5.0},
        {"time": "2026-06-05T10:02:00Z", "value": 7.0},
        {"time": "2026-06-05T10:03:00Z", "value": 9.0},
    ]


@pytest.mark.parametrize(("agg", "expected"), [
    ("avg", 4.0), ("min", 1.0), ("max", 10.0), ("sum", 20.0), ("count", 5.0),
    ("last", 2.0), ("p50", 3.0), ("p95", 8.8), ("p99", 9.76),
])
def test_every_aggregate_through_http(client: FlaskClient, tokens: Tokens,
                                      repos: FakeRepositories, agg: str,
                                      expected: float) -> None:
    values = [(0, 1.0), (1, 4.0), (2, 3.0), (3, 10.0), (9, 2.0)]  # seconds, value
    store(repos, [(T0 + timedelta(seconds=s), v, {"core": "total"}) for s, v in values])
    body = get(client, tokens, agg=agg, bucket="10s").get_json()
    assert body["agg"] == agg and body["bucket"] == "10s"
    [point] = body["points"]
    assert point["time"] == "2026-06-05T10:00:00Z"
    assert point["value"] == pytest.approx(expected)


def test_label_filter_keeps_total_apart_from_cores(client: FlaskClient, tokens: Tokens,
                                                   repos: FakeRepositories) -> None:
    store(repos, [(T0, 50.0, {"core": "total"}), (T0, 10.0, {"core": "0"}),
                  (T0, 90.0, {"core": "1"})])
    assert get(client, tokens).get_json()["points"][0]["value"] == 50.0
    body = get(client, tokens, label="core:total").get_json()
    assert body["points"] == [{"time": "2026-06-05T10:00:00Z", "value": 50.0}]
    assert get(client, tokens, label=["core:total", "core:0"]).get_json()["points"] == []


def test_group_by_answers_one_series_per_value(client: FlaskClient, tokens: Tokens,
                                               repos: FakeRepositories) -> None:
    store(repos, [(T0, 50.0, {"core": "total"}), (T0, 10.0, {"core": "1"}),
                  (T0 + timedelta(minutes=1), 30.0, {"core": "1"}), (T0, 90.0, {"core": "0"}),
                  (T0, 1.0, {"other": "x"})])
    body = get(client, tokens, group_by="core").get_json()
    assert "points" not in body
    assert body["series"] == [
        {"labels": {"core": "0"}, "points": [{"time": "2026-06-05T10:00:00Z", "value": 90.0}]},
        {"labels": {"core": "1"}, "points": [{"time": "2026-06-05T10:00:00Z", "value": 10.0},
                                             {"time": "2026-06-05T10:01:00Z", "value": 30.0}]},
        {"labels": {"core": "total"},
         "points": [{"time": "2026-06-05T10:00:00Z", "value": 50.0}]},
    ]


def test_group_by_without_matches_is_empty_series(client: FlaskClient,
                                                  tokens: Tokens) -> None:
    assert get(client, tokens, group_by="core").get_json()["series"] == []


def test_other_hosts_and_names_are_not_mixed_in(client: FlaskClient, tokens: Tokens,
                                                repos: FakeRepositories) -> None:
    store(repos, [(T0, 1.0, {})])
    store(repos, [(T0, 2.0, {})], host="web-02")
    store(repos, [(T0, 3.0, {})], name="mem.used_pct")
    assert get(client, tokens).get_json()["points"][0]["value"] == 1.0


def test_day_buckets_align_to_utc_midnight(client: FlaskClient, tokens: Tokens,
                                           repos: FakeRepositories) -> None:
    store(repos, [(T0, 1.0, {}), (T0 + timedelta(hours=13, minutes=59), 3.0, {})])
    body = get(client, tokens, bucket="1d", to="2026-06-06T00:00:00Z").get_json()
    assert body["points"] == [{"time": "2026-06-05T00:00:00Z", "value": 2.0}]
    body = get(client, tokens, bucket="6h", to="2026-06-06T00:00:00Z").get_json()
    assert [p["time"] for p in body["points"]] == ["2026-06-05T06:00:00Z",
                                                  "2026-06-05T18:00:00Z"]


def test_hosts_is_empty_list_then_sorted(client: FlaskClient, tokens: Tokens,
                                         repos: FakeRepositories) -> None:
    url = "/api/v1/metrics/hosts"
    assert client.get(url, headers=tokens.auth("read")).get_json() == {"hosts": []}
    for host in ("web-02", "db-01", "web-01"):
        store(repos, [(T0, 1.0, {})], host=host)
    assert client.get(url, headers=tokens.auth("read")).get_json() == {
        "hosts": ["db-01", "web-01", "web-02"]}


def test_query_while_storage_down_is_503(client: FlaskClient, tokens: Tokens,
                                         repos: FakeRepositories) -> None:
    repos.down = True
    response = get(client, tokens)
    assert response.status_code == 503
    assert response.get_json() == {"error": "storage unavailable"}
