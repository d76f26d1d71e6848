"""SQLite reads are cut at REQUEST_TIMEOUT, as PostgreSQL's statement_timeout cuts them
(issue 9, item 2): a progress handler interrupts the statement and the API answers 503.
Writes (batches, alert state, retention) are never cut."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from miniobserv.model import Metric, MetricBatch, format_time
from miniobserv.server.storage.base import StorageUnavailable
from miniobserv.server.storage.sqlite import SQLiteRepositories
from tests.security.bounded_support import auth, test_client

# Counts to 10^9 in SQLite's VM: minutes of work, unless something cuts it.
LONG_QUERY = """WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c
    WHERE x < 1000000000) SELECT count(*) FROM c"""
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_long_read_is_cut_at_the_timeout(sqlite_url: str) -> None:
    repos = SQLiteRepositories(sqlite_url, statement_timeout=timedelta(milliseconds=50))
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="statement timeout"):
            with repos.db.read() as conn:
                conn.execute(LONG_QUERY).fetchall()
        assert time.monotonic() - started < 5  # cut, not run to its end
        with repos.db.read() as conn:  # the connection went back to the pool in working order
            assert conn.execute("SELECT 1").fetchall() == [(1,)]
    finally:
        repos.close()


def test_without_a_timeout_reads_are_not_cut(sqlite_url: str) -> None:
    repos = SQLiteRepositories(sqlite_url)
    try:
        with repos.db.read() as conn:
            assert conn.execute(LONG_QUERY.replace("1000000000", "200000")).fetchall() == \
                [(200000,)]
    finally:
        repos.close()


def store_points(repos: SQLiteRepositories, count: int) -> None:
    for start in range(0, count, 1000):
        repos.metrics.insert_batch(MetricBatch(host="web-01", metrics=[
            Metric(time=T0 + timedelta(seconds=i), host="web-01", name="cpu.usage_pct",
                   value=float(i), labels={"core": str(i % 16)})
            for i in range(start, start + 1000)]))


def test_writes_and_retention_are_not_cut(sqlite_url: str) -> None:
    repos = SQLiteRepositories(sqlite_url, statement_timeout=timedelta(microseconds=1))
    try:
        store_points(repos, 20_000)  # 20 batches of 1000: each longer than the bound
        later = T0 + timedelta(days=1)
        assert repos.fleet.delete_expired(later, later, later) == 20_000
    finally:
        repos.close()


def test_a_metric_query_past_the_timeout_answers_503(sqlite_url: str) -> None:
    repos = SQLiteRepositories(sqlite_url, statement_timeout=timedelta(milliseconds=1))
    store_points(repos, 50_000)
    params = {"host": "web-01", "name": "cpu.usage_pct", "from": format_time(T0),
              "to": format_time(T0 + timedelta(days=1)), "bucket": "1h", "agg": "p99",
              "group_by": "core"}
    try:
        response = test_client(repos).get("/api/v1/metrics/query", query_string=params,
                                          headers=auth())
    finally:
        repos.close()
    assert response.status_code == 503
    assert response.get_json() == {"error": "storage unavailable"}
