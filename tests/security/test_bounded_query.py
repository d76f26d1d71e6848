"""A metric query's answer is bounded before it runs (issue 9, item 2).

At most MAX_QUERY_POINTS points (buckets × series) and 1,000 series per ``group_by``; the
buckets follow from the range, the series of a ``group_by`` are counted by the store.
Before, 30 days at ``bucket=10s`` with ``group_by`` on a 16-core host was 4.4 M points.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from werkzeug.serving import make_server

from miniobserv.cli import cli
from miniobserv.model import Metric, MetricBatch, format_time
from miniobserv.server.api.metrics import MAX_GROUP_SERIES, bucket_count
from miniobserv.server.storage.base import MetricQuery, Repositories
from tests.fakes import FakeRepositories
from tests.security.bounded_support import SECRET, STORES, auth, opened_store, test_client

T0 = datetime(2026, 1, 1, tzinfo=UTC)  # aligned to every bucket width
HOST, NAME = "web-01", "disk.used_pct"
URLS = ["/api/v1/metrics/query", "/api/v1/dashboard/query"]


def with_series(repos: Repositories, count: int, host: str = HOST) -> Repositories:
    """Store one point of each of ``count`` series (labels mount=/m0, /m1, ...) at T0."""
    metrics = [Metric(time=T0, host=host, name=NAME, value=1.0,
                      labels={"mount": f"/m{i}", "dev": "sda" if i % 2 else "sdb"})
               for i in range(count)]
    for start in range(0, count, 1000):
        repos.metrics.insert_batch(MetricBatch(host=host, metrics=metrics[start:start + 1000]))
    return repos


def get(url: str, repos: Any = None, *, span: timedelta, start: datetime = T0,
        bucket: str = "10s", **extra: str) -> Any:
    params = {"host": HOST, "name": NAME, "from": format_time(start),
              "to": format_time(start + span), "bucket": bucket, **extra}
    return test_client(repos).get(url, query_string=params, headers=auth())


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("start", [T0, T0 + timedelta(seconds=9)])  # first bucket before from
def test_exactly_max_query_points_is_answered(url: str, start: datetime) -> None:
    # Buckets T0, T0+10s, ..., T0+999,990s: 100,000 of them.
    response = get(url, span=T0 + timedelta(seconds=999_999) - start, start=start)
    assert response.status_code == 200, response.get_json()


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("start", [T0, T0 + timedelta(seconds=9)])
def test_one_point_more_is_400_naming_bucket(url: str, start: datetime) -> None:
    response = get(url, span=T0 + timedelta(seconds=1_000_000) - start, start=start)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error.startswith("bucket: the query would return up to 100001 points")
    assert "MAX_QUERY_POINTS=100000" in error


def test_max_query_points_is_configurable() -> None:
    params = {"host": HOST, "name": NAME, "from": format_time(T0), "bucket": "1m"}
    client = test_client(max_query_points=1000)
    ok = client.get(URLS[0], query_string={**params, "to": format_time(T0 + timedelta(
        minutes=999))}, headers=auth())
    refused = client.get(URLS[0], query_string={**params, "to": format_time(T0 + timedelta(
        minutes=1000))}, headers=auth())
    assert ok.status_code == 200
    assert refused.get_json() == {"error": "bucket: the query would return up to 1001 points "
                                  "(buckets × series), more than MAX_QUERY_POINTS=1000: use "
                                  "a larger bucket or a shorter range"}


@pytest.mark.parametrize("url", URLS)
def test_group_by_of_1000_series_is_answered(url: str) -> None:
    repos = with_series(FakeRepositories(), MAX_GROUP_SERIES)
    # 100 one-minute buckets × 1000 series: exactly 100,000 points.
    response = get(url, repos, span=timedelta(minutes=99), bucket="1m", group_by="mount")
    assert response.status_code == 200, response.get_json()
    assert len(response.get_json()["series"]) == 1000


@pytest.mark.parametrize("url", URLS)
def test_group_by_of_1001_series_is_400_naming_group_by(url: str) -> None:
    repos = with_series(FakeRepositories(), MAX_GROUP_SERIES + 1)
    response = get(url, repos, span=timedelta(minutes=1), bucket="1m", group_by="mount")
    assert response.status_code == 400
    assert response.get_json()["error"].startswith(
        "group_by: the query would return more than 1000 series (at least 2002 points)")


@pytest.mark.parametrize("url", URLS)
def test_group_by_points_over_the_limit_is_400_naming_bucket(url: str) -> None:
    repos = with_series(FakeRepositories(), MAX_GROUP_SERIES)
    response = get(url, repos, span=timedelta(minutes=100), bucket="1m", group_by="mount")
    assert response.status_code == 400
    assert response.get_json()["error"].startswith(
        "bucket: the query would return up to 101000 points")


def test_label_filters_narrow_the_series_counted() -> None:
    repos = with_series(FakeRepositories(), 2 * MAX_GROUP_SERIES)  # 1000 on each dev
    response = get(URLS[0], repos, span=timedelta(minutes=1), bucket="1m", group_by="mount",
                   label="dev:sda")
    assert response.status_code == 200, response.get_json()
    assert len(response.get_json()["series"]) == 1000


@pytest.mark.parametrize(("start", "end", "bucket", "count"), [
    (T0, T0, "10s", 1),
    (T0, T0 + timedelta(seconds=9, microseconds=999_999), "10s", 1),
    (T0, T0 + timedelta(seconds=10), "10s", 2),
    (T0 - timedelta(microseconds=1), T0, "10s", 2),
    (T0 + timedelta(hours=23), T0 + timedelta(days=1, hours=1), "1d", 2),
    (datetime(1969, 12, 31, 23, 59, 55, tzinfo=UTC), datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC),
     "10s", 2),
])
def test_bucket_count(start: datetime, end: datetime, bucket: str, count: int) -> None:
    assert bucket_count(MetricQuery(HOST, NAME, start, end, bucket=bucket)) == count


# --- the store's series count, on every store --------------------------------------------


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> Iterator[Repositories]:
    with opened_store(request.param, request) as repos:
        yield repos


def group_query(**overrides: Any) -> MetricQuery:
    values: dict[str, Any] = {"host": HOST, "name": NAME, "start": T0 - timedelta(hours=1),
                              "end": T0 + timedelta(hours=1), "group_by": "mount"}
    return MetricQuery(**{**values, **overrides})


def test_count_series_at_the_edge(store: Repositories) -> None:
    with_series(store, MAX_GROUP_SERIES + 1)
    with_series(store, 5, host="other-host")
    count = store.metrics.count_series
    assert count(group_query(), MAX_GROUP_SERIES + 1) == 1001
    assert count(group_query(), MAX_GROUP_SERIES) == 1000  # the LIMIT bounds the count
    assert count(group_query(labels=(("dev", "sda"),)), 2000) == 500
    assert count(group_query(group_by="dev"), 2000) == 2
    assert count(group_query(group_by="core"), 2000) == 0  # no point carries it
    assert count(group_query(start=T0 + timedelta(microseconds=1)), 2000) == 0
    assert count(group_query(end=T0), 2000) == 1001  # the window is inclusive
    assert count(group_query(host="other-host"), 2000) == 5
    assert count(group_query(group_by=None), 2000) == 1


def test_count_series_of_exactly_1000(store: Repositories) -> None:
    with_series(store, MAX_GROUP_SERIES)
    assert store.metrics.count_series(group_query(), MAX_GROUP_SERIES + 1) == 1000


# --- the CLI shows the server's error ----------------------------------------------------


def test_cli_query_shows_the_servers_error() -> None:
    app = test_client().application
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = CliRunner().invoke(cli, [
            "query", "--host", HOST, "--name", NAME, "--since", "20d", "--bucket", "10s",
            "--server", f"http://127.0.0.1:{server.server_port}"], env={"AGENT_TOKEN": SECRET})
    finally:
        server.shutdown()
        thread.join()
    assert result.exit_code == 1
    assert "the server answered 400: bucket: the query would return up to 17280" in \
        result.output
