"""GET /api/v1/metrics/query: the range limit, 30 days raw and 400 days from a rollup (SPEC §3).

Handler tests over the fake (whose ``rollup`` flag says what the store would serve), and the
same request against real stores: TimescaleDB accepts a 31-day 1h query, plain PostgreSQL and
SQLite answer 400 naming ``to``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient
from werkzeug.datastructures import MultiDict

from miniobserv.config import ServerConfig
from miniobserv.errors import ValidationError
from miniobserv.model import format_time
from miniobserv.server.api.metrics import MAX_RANGE, MAX_ROLLUP_RANGE, parse_metric_query
from miniobserv.server.app import create_app
from miniobserv.server.storage import open_repositories
from miniobserv.server.storage.base import MetricQuery
from miniobserv.server.storage.postgres import db as postgres_db
from tests.fakes import FakeRepositories
from tests.server.api.conftest import SECRET, Tokens

URL = "/api/v1/metrics/query"
SECOND = timedelta(seconds=1)
TO = datetime(2026, 6, 5, 10, 0, 0, tzinfo=UTC)


def span(length: timedelta, **extra: str) -> dict[str, str]:
    return {"host": "web-01", "name": "cpu.usage_pct", "from": format_time(TO - length),
            "to": format_time(TO), "bucket": "1h", **extra}


def test_the_limits() -> None:
    assert (MAX_RANGE, MAX_ROLLUP_RANGE) == (timedelta(days=30), timedelta(days=400))


# --- the pure function ---------------------------------------------------------------------

class Asked:
    """A ``serves_from_rollup`` that records the queries it is asked about."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.queries: list[MetricQuery] = []

    def __call__(self, query: MetricQuery) -> bool:
        self.queries.append(query)
        return self.answer


def test_the_store_is_asked_only_past_30_days() -> None:
    asked = Asked(False)
    parse_metric_query(MultiDict(span(MAX_RANGE)), asked)
    assert asked.queries == []
    with pytest.raises(ValidationError, match="^to: the range from..to must be at most 30 days"):
        parse_metric_query(MultiDict(span(MAX_RANGE + SECOND)), asked)
    assert [(q.bucket, q.agg, q.end - q.start) for q in asked.queries] == [
        ("1h", "avg", MAX_RANGE + SECOND)]


def test_a_rollup_query_may_span_400_days_and_no_more() -> None:
    asked = Asked(True)
    query = parse_metric_query(MultiDict(span(MAX_ROLLUP_RANGE, agg="last")), asked)
    assert query.end - query.start == MAX_ROLLUP_RANGE
    with pytest.raises(ValidationError, match="^to: .*400 days for queries served from a rollup"):
        parse_metric_query(MultiDict(span(MAX_ROLLUP_RANGE + SECOND)), asked)


def test_without_a_repository_the_limit_is_30_days() -> None:
    with pytest.raises(ValidationError, match="^to: "):
        parse_metric_query(MultiDict(span(MAX_RANGE + SECOND)))


# --- handlers over the fake ----------------------------------------------------------------

def get(client: FlaskClient, tokens: Tokens, length: timedelta, url: str = URL,
        **extra: str) -> Any:
    return client.get(url, query_string=span(length, **extra), headers=tokens.auth("read"))


@pytest.mark.parametrize("url", [URL, "/api/v1/dashboard/query"])
@pytest.mark.parametrize(("rollup", "length", "status"), [
    (False, MAX_RANGE, 200),
    (False, MAX_RANGE + SECOND, 400),
    (True, MAX_RANGE + SECOND, 200),
    (True, MAX_ROLLUP_RANGE, 200),
    (True, MAX_ROLLUP_RANGE + SECOND, 400),
])
def test_range_limits_at_their_edges(client: FlaskClient, tokens: Tokens,
                                     repos: FakeRepositories, rollup: bool,
                                     length: timedelta, status: int, url: str) -> None:
    """The API's query and the dashboard's copy of it have the same limits."""
    repos.metrics.rollup = rollup
    response = get(client, tokens, length, url)
    assert response.status_code == status, response.get_json()
    if status == 400:
        assert response.get_json()["error"].startswith("to: the range from..to must be at most")
    else:
        assert response.get_json()["points"] == []


def test_a_store_down_while_asked_is_503(client: FlaskClient, tokens: Tokens,
                                         repos: FakeRepositories) -> None:
    repos.metrics.down = True
    assert get(client, tokens, MAX_RANGE + SECOND).status_code == 503


# --- real stores ---------------------------------------------------------------------------

def client_of(url: str) -> Iterator[FlaskClient]:
    config = ServerConfig(agent_token=SECRET, database_url=url, auto_migrate=False)
    repos = open_repositories(config)
    try:
        app = create_app(config, repos)
        app.testing = True
        yield app.test_client()
    finally:
        repos.close()


@pytest.fixture
def timescale_client(fresh_postgres_url: str) -> Iterator[FlaskClient]:
    with psycopg.connect(fresh_postgres_url) as conn:
        if not postgres_db.has_timescaledb(conn):
            pytest.skip("the timescaledb extension is not available on the test server")
    yield from client_of(fresh_postgres_url)


@pytest.fixture(params=["sqlite", "plain-postgres"])
def rollupless_client(request: pytest.FixtureRequest, postgres_databases: Any
                      ) -> Iterator[FlaskClient]:
    if request.param == "sqlite":
        yield from client_of(str(request.getfixturevalue("sqlite_url")))
        return
    url = postgres_databases.create(timescaledb=False)
    yield from client_of(url)
    postgres_databases.drop(url)


def recent_span(length: timedelta, **extra: str) -> dict[str, str]:
    """Ending now: the store serves rollups only within their retention."""
    return {**span(length, **extra), "from": format_time(datetime.now(UTC) - length),
            "to": format_time(datetime.now(UTC))}


@pytest.mark.integration
@pytest.mark.timescaledb
def test_timescaledb_accepts_a_31_day_1h_query(timescale_client: FlaskClient) -> None:
    tokens = Tokens(SECRET)
    for bucket in ("1h", "1d"):
        response = timescale_client.get(URL, headers=tokens.auth("read"),
                                        query_string=recent_span(timedelta(days=31),
                                                                 bucket=bucket))
        assert response.status_code == 200, response.get_json()
    response = timescale_client.get(URL, headers=tokens.auth("read"), query_string=recent_span(
        timedelta(days=31), agg="p95"))
    assert response.status_code == 400
    assert response.get_json()["error"].startswith("to: ")


@pytest.mark.integration
def test_stores_without_rollups_refuse_a_31_day_1h_query(
        rollupless_client: FlaskClient) -> None:
    response = rollupless_client.get(URL, headers=Tokens(SECRET).auth("read"),
                                     query_string=recent_span(timedelta(days=31)))
    assert response.status_code == 400
    assert response.get_json()["error"].startswith("to: the range from..to must be at most 30")
