"""Handler tests of the fleet-wide reads: /api/v1/metrics/latest, /top, and /query without a
host or with group_by=host (issue 10), over the fake repositories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from miniobserv.config import ServerConfig
from miniobserv.model import Metric, MetricBatch, format_time
from miniobserv.server.api.fleet_metrics import MAX_TOP_LIMIT
from tests.fakes import FakeRepositories
from tests.server.api.conftest import SECRET, Tokens

NOW = datetime.now(UTC).replace(microsecond=0)
CAP = 1000  # MAX_QUERY_POINTS of these tests: its lower bound


@pytest.fixture
def config() -> ServerConfig:
    return ServerConfig(agent_token=SECRET, auto_migrate=False, max_query_points=CAP)


def put(repos: FakeRepositories, host: str, name: str, value: float, ago: timedelta,
        **labels: str) -> None:
    repos.metrics.insert_batch(MetricBatch(host, [Metric(NOW - ago, host, name, value, labels)]))


def get(client: FlaskClient, tokens: Tokens, path: str, **params: Any) -> Any:
    return client.get(f"/api/v1/metrics/{path}", query_string=params,
                      headers=tokens.auth("read"))


def assert_400(response: Any, field: str) -> None:
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"].startswith(f"{field}: ")


# --- /latest --------------------------------------------------------------------------------

def test_latest_answers_every_series_sorted_by_host_then_labels(
        client: FlaskClient, tokens: Tokens, repos: FakeRepositories) -> None:
    minute = timedelta(minutes=1)
    put(repos, "web-02", "cpu.usage_pct", 20.0, minute, core="total")
    put(repos, "web-01", "cpu.usage_pct", 30.0, 2 * minute, core="total")
    put(repos, "web-01", "cpu.usage_pct", 35.0, minute, core="total")
    put(repos, "web-01", "cpu.usage_pct", 5.0, minute, core="0")
    put(repos, "web-03", "cpu.usage_pct", 99.0, 6 * minute, core="total")  # outside 5m
    put(repos, "web-01", "mem.used_pct", 50.0, minute)
    answer = get(client, tokens, "latest", name="cpu.usage_pct").get_json()
    assert answer["name"] == "cpu.usage_pct" and answer["within"] == "5m"
    assert answer["series"] == [
        {"host": "web-01", "labels": {"core": "0"}, "time": format_time(NOW - minute),
         "value": 5.0},
        {"host": "web-01", "labels": {"core": "total"}, "time": format_time(NOW - minute),
         "value": 35.0},
        {"host": "web-02", "labels": {"core": "total"}, "time": format_time(NOW - minute),
         "value": 20.0}]
    wider = get(client, tokens, "latest", name="cpu.usage_pct", within="10m",
                label="core:total").get_json()
    assert [(s["host"], s["value"]) for s in wider["series"]] == \
        [("web-01", 35.0), ("web-02", 20.0), ("web-03", 99.0)]
    one = get(client, tokens, "latest", name="cpu.usage_pct", host="web-02").get_json()
    assert [s["host"] for s in one["series"]] == ["web-02"]


@pytest.mark.parametrize(("params", "field"), [
    ({}, "name"), ({"name": "cpu_usage_pct"}, "name"),
    ({"name": "mem.used_pct", "within": "9s"}, "within"),
    ({"name": "mem.used_pct", "within": "1d1s"}, "within"),
    ({"name": "mem.used_pct", "within": "soon"}, "within"),
    ({"name": "mem.used_pct", "within": ""}, "within"),
    ({"name": "mem.used_pct", "within": "9" * 400 + "d"}, "within"),
    ({"name": "mem.used_pct", "label": "core"}, "label"),
    ({"name": "mem.used_pct", "host": " "}, "host"),
])
def test_latest_bad_parameters_are_400_naming_them(client: FlaskClient, tokens: Tokens,
                                                   params: dict[str, str], field: str) -> None:
    assert_400(get(client, tokens, "latest", **params), field)


@pytest.mark.parametrize("within", ["10s", "1d", "24h", "90s"])
def test_latest_within_bounds_are_inclusive(client: FlaskClient, tokens: Tokens,
                                            within: str) -> None:
    response = get(client, tokens, "latest", name="mem.used_pct", within=within)
    assert response.status_code == 200
    assert response.get_json()["series"] == []


def test_latest_answers_at_most_max_query_points_series(
        client: FlaskClient, tokens: Tokens, repos: FakeRepositories) -> None:
    for index in range(CAP):
        put(repos, f"host-{index:04d}", "mem.used_pct", float(index), timedelta(seconds=5))
    full = get(client, tokens, "latest", name="mem.used_pct")
    assert full.status_code == 200 and len(full.get_json()["series"]) == CAP
    put(repos, "host-extra", "mem.used_pct", 1.0, timedelta(seconds=5))
    too_many = get(client, tokens, "latest", name="mem.used_pct")
    assert_400(too_many, "label")
    assert str(CAP) in too_many.get_json()["error"]
    filtered = get(client, tokens, "latest", name="mem.used_pct", host="host-extra")
    assert len(filtered.get_json()["series"]) == 1


# --- /top -----------------------------------------------------------------------------------

def top_params(**overrides: Any) -> dict[str, Any]:
    """The parameters of a /top request; a timedelta override is that long before NOW."""
    params = {"name": "cpu.usage_pct", "from": format_time(NOW - timedelta(hours=1)),
              "to": format_time(NOW), **overrides}
    return {k: format_time(NOW - v) if isinstance(v, timedelta) else v
            for k, v in params.items()}


def test_top_ranks_hosts_by_the_aggregate(client: FlaskClient, tokens: Tokens,
                                          repos: FakeRepositories) -> None:
    values = {"web-01": [10.0, 30.0], "web-02": [50.0, 70.0], "db-01": [5.0, 95.0]}
    for host, host_values in values.items():
        for minutes, value in enumerate(host_values, start=1):
            put(repos, host, "cpu.usage_pct", value, timedelta(minutes=minutes), core="total")
        put(repos, host, "cpu.usage_pct", 1000.0, timedelta(minutes=1), core="0")
    answer = get(client, tokens, "top", **top_params(label="core:total")).get_json()
    averages = {host: sum(v) / len(v) for host, v in values.items()}
    expected = sorted(averages, key=lambda host: -averages[host])
    assert answer == {"name": "cpu.usage_pct", "agg": "avg", "order": "desc",
                      "from": top_params()["from"], "to": top_params()["to"],
                      "hosts": [{"host": h, "value": averages[h]} for h in expected]}
    lowest = get(client, tokens, "top", **top_params(label="core:total", agg="max",
                                                     order="asc", limit="2")).get_json()
    maxima = sorted((max(v), host) for host, v in values.items())[:2]
    assert [(h["value"], h["host"]) for h in lowest["hosts"]] == maxima


@pytest.mark.parametrize(("overrides", "field"), [
    ({"name": None}, "name"), ({"from": None}, "from"), ({"to": None}, "to"),
    ({"from": timedelta(0)}, "from"),  # from == to
    ({"from": timedelta(days=30, seconds=1)}, "to"),
    ({"agg": "median"}, "agg"), ({"agg": ""}, "agg"),
    ({"limit": "0"}, "limit"), ({"limit": str(MAX_TOP_LIMIT + 1)}, "limit"),
    ({"limit": "-1"}, "limit"), ({"limit": "1.5"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"limit": "٣"}, "limit"), ({"limit": "9" * 5000}, "limit"),
    ({"order": "up"}, "order"), ({"order": "DESC"}, "order"),
    ({"label": "core"}, "label"),
])
def test_top_bad_parameters_are_400_naming_them(client: FlaskClient, tokens: Tokens,
                                                overrides: dict[str, Any], field: str) -> None:
    params = {k: v for k, v in top_params(**overrides).items() if v is not None}
    assert_400(get(client, tokens, "top", **params), field)


@pytest.mark.parametrize("overrides", [
    {"limit": "1"}, {"limit": str(MAX_TOP_LIMIT)}, {"order": "asc"}, {"agg": "p99"},
    {"from": timedelta(days=30)},  # exactly the longest range
])
def test_top_limits_are_inclusive(client: FlaskClient, tokens: Tokens,
                                  overrides: dict[str, Any]) -> None:
    response = get(client, tokens, "top", **top_params(**overrides))
    assert response.status_code == 200 and response.get_json()["hosts"] == []


# --- /query without a host, group_by=host ------------------------------------------------------

HOUR = timedelta(hours=1)
START = NOW.replace(minute=0, second=0) - 2 * HOUR  # 1h buckets: START, +1h, +2h


@pytest.fixture(autouse=True)
def _now() -> None:
    """NOW (and START) are the time each test starts: ``within`` windows are relative to the
    clock, and a whole suite run takes longer than them."""
    global NOW, START
    NOW = datetime.now(UTC).replace(microsecond=0)
    START = NOW.replace(minute=0, second=0) - 2 * HOUR


def query_params(**overrides: Any) -> dict[str, Any]:
    return {"name": "mem.used_pct", "from": format_time(START), "to": format_time(START + 2 * HOUR),
            "bucket": "1h", **overrides}


def test_query_without_host_aggregates_every_host(client: FlaskClient, tokens: Tokens,
                                                  repos: FakeRepositories) -> None:
    for host, value in (("a", 10.0), ("b", 20.0), ("c", 60.0)):
        put(repos, host, "mem.used_pct", value, NOW - START - timedelta(minutes=10))
    answer = get(client, tokens, "query", **query_params()).get_json()
    assert answer["host"] is None
    assert answer["points"] == [{"time": format_time(START), "value": (10 + 20 + 60) / 3}]
    grouped = get(client, tokens, "query", **query_params(group_by="host", agg="max")).get_json()
    assert grouped["series"] == [
        {"labels": {"host": h}, "points": [{"time": format_time(START), "value": v}]}
        for h, v in (("a", 10.0), ("b", 20.0), ("c", 60.0))]
    one = get(client, tokens, "query", **query_params(group_by="host", host="b")).get_json()
    assert one["host"] == "b" and [s["labels"] for s in one["series"]] == [{"host": "b"}]


def test_group_by_host_is_bounded_by_the_query_size_cap(
        client: FlaskClient, tokens: Tokens, repos: FakeRepositories) -> None:
    buckets = 3
    hosts = CAP // buckets  # buckets x hosts == CAP: allowed
    for index in range(hosts):
        put(repos, f"h{index:04d}", "mem.used_pct", 1.0, NOW - START)
    response = get(client, tokens, "query", **query_params(group_by="host"))
    assert response.status_code == 200 and len(response.get_json()["series"]) == hosts
    put(repos, "h-extra", "mem.used_pct", 1.0, NOW - START)  # (hosts + 1) x 3 > CAP
    assert_400(get(client, tokens, "query", **query_params(group_by="host")), "bucket")


def test_fleet_queries_are_limited_to_the_raw_range(client: FlaskClient, tokens: Tokens,
                                                    repos: FakeRepositories) -> None:
    repos.metrics.rollup = True  # a per-host 1h query may then span 400 days
    long = query_params(**{"from": format_time(NOW - timedelta(days=31)), "to": format_time(NOW)})
    assert get(client, tokens, "query", **long, host="a").status_code == 200
    assert_400(get(client, tokens, "query", **long), "to")
    assert_400(get(client, tokens, "query", **long, host="a", group_by="host"), "to")
