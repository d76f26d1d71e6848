"""PostgreSQL reads: sessions in UTC whatever the database's zone, reads outside transactions.

The pool sets each new connection's TimeZone to UTC (psycopg then reads timestamptz as
``datetime.UTC`` datetimes, which answers write without converting them); a database whose
own default zone is far from UTC answers the same instants and the same bucket starts.
Query and latest reads run in autocommit mode and leave their connection as they found it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from miniobserv.model import Metric, MetricBatch
from miniobserv.server.storage import open_repositories
from miniobserv.server.storage.base import MetricQuery, Series
from miniobserv.server.storage.postgres import PostgresRepositories
from miniobserv.server.storage.postgres.db import read_rows
from tests.server.storage.conftest import config_for

pytestmark = pytest.mark.integration

# 5 h 45 min east of UTC: a day's and an hour's boundaries differ from UTC's there.
FAR_ZONE = "Asia/Kathmandu"
START = datetime(2026, 6, 5, 23, 59, 59, 999_999, tzinfo=UTC)


@pytest.fixture
def repos(fresh_postgres_url: str) -> Iterator[PostgresRepositories]:
    with psycopg.connect(fresh_postgres_url, autocommit=True) as conn:
        database = conn.info.dbname
        conn.execute(f'ALTER DATABASE "{database}" SET TimeZone TO \'{FAR_ZONE}\'')
    opened = open_repositories(config_for(fresh_postgres_url))
    assert isinstance(opened, PostgresRepositories)
    try:
        yield opened
    finally:
        opened.close()


def test_the_database_default_zone_is_far_but_pooled_sessions_are_utc(
        fresh_postgres_url: str, repos: PostgresRepositories) -> None:
    with psycopg.connect(fresh_postgres_url) as conn:
        assert conn.execute("SHOW TimeZone").fetchone() == (FAR_ZONE,)
    with repos.pool.connection() as conn:
        assert conn.execute("SHOW TimeZone").fetchone() == ("UTC",)
        row = conn.execute("SELECT TIMESTAMPTZ '2026-06-05 10:00:00.25+02'").fetchone()
    assert row is not None and row[0].tzinfo is UTC
    assert row[0] == datetime(2026, 6, 5, 8, 0, 0, 250_000, tzinfo=UTC)


def test_buckets_and_latest_are_utc_instants_at_microsecond_and_day_edges(
        repos: PostgresRepositories) -> None:
    times = [START, START + timedelta(microseconds=1), START + timedelta(hours=1) - timedelta(microseconds=1)]
    repos.metrics.insert_batch(MetricBatch(host="web-01", metrics=[
        Metric(time=at, host="web-01", name="cpu.usage_pct", value=float(i), labels={})
        for i, at in enumerate(times)]))
    # The last microsecond of a UTC day, the first of the next, and one just before 01:00 (a
    # Kathmandu day and hour would cut elsewhere: 18:15 and hh:15 UTC).
    for bucket, starts in (("1d", [datetime(2026, 6, 5, tzinfo=UTC),
                                   datetime(2026, 6, 6, tzinfo=UTC)]),
                           ("1h", [datetime(2026, 6, 5, 23, tzinfo=UTC),
                                   datetime(2026, 6, 6, tzinfo=UTC)])):
        query = MetricQuery(host="web-01", name="cpu.usage_pct", bucket=bucket, agg="count",
                            start=START - timedelta(days=1), end=START + timedelta(days=1))
        [series] = repos.metrics.query(query)
        assert [(p.time, p.value) for p in series.points] == list(zip(starts, (1.0, 2.0),
                                                                          strict=True)), bucket
        assert all(p.time.tzinfo is UTC for p in series.points)
    [latest] = repos.fleet.latest(START - timedelta(days=1), name="cpu.usage_pct")
    assert latest.time == times[-1] and latest.time.tzinfo is UTC


def test_reads_run_outside_a_transaction_and_restore_the_connection(
        repos: PostgresRepositories) -> None:
    rows = read_rows(repos.pool, "SELECT now() = statement_timestamp(),"
                                 " pg_current_xact_id_if_assigned() IS NULL")
    assert rows == [(True, True)]
    with repos.pool.connection() as conn:
        assert not conn.autocommit  # every other user of the pool still gets transactions
        first = conn.execute("SELECT now()").fetchone()
        assert conn.execute("SELECT now()").fetchone() == first


def timeout_of_a_checked_connection(repos: PostgresRepositories) -> str:
    with repos.pool.connection() as conn:
        row = conn.execute("SHOW statement_timeout").fetchone()
    assert row is not None
    return str(row[0])


def test_reads_keep_this_threads_statement_timeout_without_the_checks_round_trip(
        repos: PostgresRepositories) -> None:
    bounded = timeout_of_a_checked_connection(repos)
    assert bounded != "0"
    assert read_rows(repos.pool, "SHOW statement_timeout") == [(bounded,)]
    with repos.db.unbounded_statements():  # the same connections, now without a timeout
        assert read_rows(repos.pool, "SHOW statement_timeout") == [("0",)]
        assert timeout_of_a_checked_connection(repos) == "0"
    assert read_rows(repos.pool, "SHOW statement_timeout") == [(bounded,)]
    assert timeout_of_a_checked_connection(repos) == bounded


def test_a_read_whose_connection_was_terminated_is_answered_on_another(
        fresh_postgres_url: str, repos: PostgresRepositories) -> None:
    """The check no longer proves a read's connection alive: the read retries once."""
    before = read_rows(repos.pool, "SELECT pg_backend_pid()")
    with psycopg.connect(fresh_postgres_url, autocommit=True) as admin:
        ended = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                              " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                              " AND application_name = 'miniobserv'").fetchone()
    assert ended is not None and ended[0] >= 1  # every pooled connection, the read's too
    after = read_rows(repos.pool, "SELECT pg_backend_pid()")
    assert after != before
    assert repos.metrics.query(MetricQuery(host="web-01", name="cpu.usage_pct", start=START,
                                           end=START + timedelta(hours=1))) == \
        [Series(labels={}, points=[])]
