"""Rollups (migrations 0005, 0007, SPEC §7): TimescaleDB continuous aggregates serve 1h and 1d.

The migration creates and drops them on TimescaleDB and does nothing elsewhere; a query the
PostgreSQL store answers from a rollup equals the raw query: min, max, count and last exactly,
sum and avg exactly when the sums are exact (values in eighths here), else up to rounding.
TimescaleDB tests skip where the test server has no TimescaleDB.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from miniobserv.model import Metric, MetricBatch
from miniobserv.server.storage import migrate, open_repositories
from miniobserv.server.storage.base import MetricQuery, Point, Series
from miniobserv.server.storage.postgres import PostgresRepositories
from miniobserv.server.storage.postgres import db as postgres_db
from miniobserv.server.storage.postgres.db import ROLLUP_VIEWS
from miniobserv.server.storage.postgres.metrics import (
    ROLLUP_AGGREGATE_SQL,
    ROLLUP_RETENTION,
    build_query,
)
from miniobserv.server.storage.shaping import bucket_floor, to_series, whole_buckets
from tests.server.storage.conftest import config_for

pytestmark = pytest.mark.integration

HOUR, DAY = timedelta(hours=1), timedelta(days=1)
NAME = "cpu.usage_pct"
LABEL_SETS: list[dict[str, str]] = [{"core": "0"}, {"core": "1"}, {"core": "total"}, {}]
ROLLUP_AGGS = list(ROLLUP_AGGREGATE_SQL)


def rollups_of(url: str) -> dict[str, bool]:
    """Rollup view name -> materialized_only, for every continuous aggregate of the database."""
    with psycopg.connect(url) as conn:
        if not postgres_db.has_timescaledb(conn):
            return {}
        rows = conn.execute("SELECT view_name, materialized_only"
                            " FROM timescaledb_information.continuous_aggregates").fetchall()
    return dict(rows)


def rollup_jobs(url: str) -> set[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT proc_name, hypertable_name FROM timescaledb_information.jobs"
                            " WHERE hypertable_name LIKE 'samples_1_'").fetchall()
    return set(rows)


def materialized(url: str, view: str) -> tuple[int, datetime | None]:
    """The rows refreshed into ``view`` (not its real-time part) and their newest bucket."""
    with psycopg.connect(url) as conn:
        schema, table = conn.execute(
            "SELECT materialization_hypertable_schema, materialization_hypertable_name"
            " FROM timescaledb_information.continuous_aggregates WHERE view_name = %s",
            (view,)).fetchone() or ("", "")
        row = conn.execute(psycopg.sql.SQL("SELECT count(*), max(bucket) FROM {}").format(
            psycopg.sql.Identifier(schema, table))).fetchone()
    assert row is not None
    return int(row[0]), row[1]


def newest_bucket(url: str, view: str) -> datetime:
    """The newest bucket ``view`` answers, real-time part included."""
    with psycopg.connect(url) as conn:
        row = conn.execute(psycopg.sql.SQL("SELECT max(bucket) FROM {}").format(
            psycopg.sql.Identifier(view))).fetchone()
    assert row is not None
    return row[0]


def refresh(url: str, until: datetime) -> None:
    """Materialize both rollups up to ``until`` (a bucket boundary of both)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for view in ROLLUP_VIEWS.values():
            conn.execute("CALL refresh_continuous_aggregate(%s, NULL, %s)", (view, until))


# --- the migration -------------------------------------------------------------------------

@pytest.mark.timescaledb
def test_migration_creates_real_time_rollups_with_policies(timescale_url: str) -> None:
    assert rollups_of(timescale_url) == {"samples_1h": False, "samples_1d": False}
    assert rollup_jobs(timescale_url) == {
        (proc, view) for view in ROLLUP_VIEWS.values()
        for proc in ("policy_refresh_continuous_aggregate", "policy_retention")
    } | {("policy_compression", "samples_1h")}  # 0010
    with psycopg.connect(timescale_url) as conn:
        drop_after = conn.execute(
            "SELECT DISTINCT (config ->> 'drop_after')::interval FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_retention' AND hypertable_name LIKE 'samples_1_'"
        ).fetchall()
    assert drop_after == [(ROLLUP_RETENTION,)]


@pytest.mark.timescaledb
def test_downgrade_drops_rollups_and_their_jobs_and_upgrade_restores_them(
        timescale_url: str) -> None:
    migrate.downgrade(timescale_url, "0004")
    assert rollups_of(timescale_url) == {}
    assert rollup_jobs(timescale_url) == set()
    migrate.upgrade(timescale_url)
    assert set(rollups_of(timescale_url)) == set(ROLLUP_VIEWS.values())
    migrate.downgrade(timescale_url, "base")
    assert rollups_of(timescale_url) == {}
    with psycopg.connect(timescale_url) as conn:
        assert conn.execute("SELECT count(*) FROM timescaledb_information.jobs"
                            " WHERE hypertable_name IS NOT NULL").fetchone() == (0,)


@pytest.mark.timescaledb
def test_upgrade_rolls_up_the_data_already_stored(postgres_databases: Any) -> None:
    url = postgres_databases.create(migrated=False)
    migrate.upgrade(url, "0004")
    with psycopg.connect(url) as conn:
        if not postgres_db.is_hypertable(conn, "metrics"):
            pytest.skip("the timescaledb extension is not available on the test server")
        now = datetime.now(UTC)
        conn.execute("INSERT INTO metrics (time, host, name, value) SELECT t, 'h', %s, 1"
                     " FROM generate_series(%s::timestamptz, %s, interval '1 hour') t",
                     (NAME, now - 20 * DAY, now))
    migrate.upgrade(url)
    # Every whole bucket before now is materialized, far beyond the policy's 3-day window.
    assert materialized(url, "samples_1h")[0] >= 20 * 24 - 1
    assert materialized(url, "samples_1d")[0] >= 19
    postgres_databases.drop(url)


def test_no_rollups_on_plain_postgres_or_sqlite(postgres_databases: Any,
                                                sqlite_url: str) -> None:
    url = postgres_databases.create(timescaledb=False)
    assert rollups_of(url) == {}
    query = MetricQuery("h", NAME, datetime.now(UTC) - 40 * DAY, datetime.now(UTC), "1h")
    for store_url in (url, sqlite_url):
        repos = open_repositories(config_for(store_url))
        try:
            assert repos.metrics.serves_from_rollup(query) is False
            assert repos.metrics.query(query)[0].points == []
        finally:
            repos.close()
    postgres_databases.drop(url)


# --- which queries a rollup serves ---------------------------------------------------------

@pytest.fixture
def pg(timescale_url: str) -> Iterator[PostgresRepositories]:
    repos = PostgresRepositories(timescale_url, max_size=2).open()
    try:
        yield repos
    finally:
        repos.close()


def q(start: datetime, end: datetime, bucket: str = "1h", agg: str = "avg",
      **kwargs: Any) -> MetricQuery:
    return MetricQuery("web-01", NAME, start, end, bucket, agg, **kwargs)


@pytest.mark.timescaledb
def test_serves_from_rollup_only_1h_1d_of_kept_aggregates_within_retention(
        pg: PostgresRepositories) -> None:
    now = datetime.now(UTC)
    serves = pg.metrics.serves_from_rollup
    assert all(serves(q(now - DAY, now, bucket, agg))
               for bucket in ("1h", "1d") for agg in ROLLUP_AGGS)
    assert not any(serves(q(now - DAY, now, bucket)) for bucket in ("10s", "1m", "5m", "6h"))
    assert not any(serves(q(now - DAY, now, agg=agg)) for agg in ("p50", "p95", "p99"))
    # The edge of the rollups' retention (a minute's margin either side of "now").
    assert serves(q(now - ROLLUP_RETENTION + timedelta(minutes=1), now))
    assert not serves(q(now - ROLLUP_RETENTION - timedelta(minutes=1), now))


def test_whole_buckets_are_those_inside_the_inclusive_window() -> None:
    t = datetime(2026, 6, 5, tzinfo=UTC)
    micro = timedelta(microseconds=1)
    assert whole_buckets(q(t, t + HOUR - micro)) == (t, t + HOUR)  # end inclusive
    assert whole_buckets(q(t, t + HOUR - 2 * micro)) is None
    assert whole_buckets(q(t + micro, t + 3 * HOUR)) == (t + HOUR, t + 3 * HOUR)
    assert whole_buckets(q(t - DAY, t + DAY - micro, bucket="1d")) == (t - DAY, t + DAY)
    before_epoch = datetime(1969, 12, 31, 23, 30, tzinfo=UTC)
    assert bucket_floor(before_epoch, HOUR) == datetime(1969, 12, 31, 23, tzinfo=UTC)


def test_build_query_refuses_a_rollup_that_does_not_fit() -> None:
    t = datetime(2026, 6, 5, tzinfo=UTC)
    with pytest.raises(ValueError):
        build_query(q(t, t + DAY, bucket="1h"), "samples_1d")
    with pytest.raises(ValueError):
        build_query(q(t, t + DAY, agg="p95"), "samples_1h")


# --- answers equal the raw query -----------------------------------------------------------

def store_points(pg: PostgresRepositories, host: str, points: list[tuple[datetime, float]],
                 labels: dict[str, str]) -> None:
    metrics = [Metric(time=t, host=host, name=NAME, value=v, labels=labels) for t, v in points]
    for i in range(0, len(metrics), 1000):
        pg.metrics.insert_batch(MetricBatch(host=host, metrics=metrics[i:i + 1000]))


def load(pg: PostgresRepositories, start: datetime, end: datetime, step: timedelta,
         value: Any) -> None:
    """Points every ``step`` in ``[start, end)`` for every label set, on two hosts; cores 0
    and 1 share their times, so ``last`` has ties to break."""
    times = [start + i * step for i in range((end - start) // step)]
    for host in ("web-01", "web-02"):
        for index, labels in enumerate(LABEL_SETS):
            store_points(pg, host, [(t, value(t, index)) for t in times], labels)


def raw_answer(pg: PostgresRepositories, query: MetricQuery) -> list[Series]:
    with pg.pool.connection() as conn:
        return to_series(conn.execute(*build_query(query)).fetchall(), query.group_by)


def eighths(t: datetime, index: int) -> float:
    """Values whose sums are exact in any order, with ties at the newest time of a bucket."""
    return ((int(t.timestamp()) // 60 * 37 + index * 11) % 800) / 8


QUERY_SHAPES: list[dict[str, Any]] = [
    {},
    {"labels": (("core", "total"),)},
    {"group_by": "core"},
    {"labels": (("core", "0"),), "group_by": "core"},
]


@pytest.fixture
def loaded(pg: PostgresRepositories, timescale_url: str) -> tuple[PostgresRepositories, datetime]:
    """Ten days of points every 7 min 13 s; the rollups refreshed up to two days ago, then
    a day more stored (newer than the refresh: served by real-time aggregation)."""
    today = bucket_floor(datetime.now(UTC), DAY)
    start = today - 9 * DAY
    load(pg, start, today - DAY, timedelta(minutes=7, seconds=13), eighths)
    refresh(timescale_url, today - 2 * DAY)
    load(pg, today - DAY, today, timedelta(minutes=7, seconds=13), eighths)
    for view in ROLLUP_VIEWS.values():
        count, until = materialized(timescale_url, view)
        assert count > 0 and until is not None and until < today - 2 * DAY
        assert newest_bucket(timescale_url, view) >= today - DAY  # the real-time part
    return pg, start


def windows(start: datetime) -> list[tuple[datetime, datetime]]:
    """Cut mid-bucket, bucket-aligned (end inclusive), and narrower than one bucket."""
    micro = timedelta(microseconds=1)
    return [(start + timedelta(hours=1, minutes=17, seconds=3), start + 9 * DAY - micro),
            (start - HOUR, start + 9 * DAY + timedelta(minutes=5)),
            (start + DAY, start + 3 * DAY - micro),
            (start + 2 * DAY + timedelta(minutes=10), start + 2 * DAY + timedelta(minutes=40))]


@pytest.mark.timescaledb
@pytest.mark.parametrize("bucket", list(ROLLUP_VIEWS))
@pytest.mark.parametrize("agg", ROLLUP_AGGS)
def test_rollup_answers_equal_the_raw_query(loaded: tuple[PostgresRepositories, datetime],
                                            bucket: str, agg: str) -> None:
    pg, start = loaded
    for first, last in windows(start):
        for shape in QUERY_SHAPES:
            query = q(first, last, bucket, agg, **shape)
            assert pg.metrics.serves_from_rollup(query)
            answer = pg.metrics.query(query)
            assert answer == raw_answer(pg, query), (first, last, shape)
            assert any(series.points for series in answer)


@pytest.mark.timescaledb
def test_rollup_sums_of_arbitrary_floats_equal_up_to_rounding(
        pg: PostgresRepositories, timescale_url: str) -> None:
    today = bucket_floor(datetime.now(UTC), DAY)
    rand = random.Random(7)
    load(pg, today - 3 * DAY, today, timedelta(minutes=5),
         lambda t, index: rand.uniform(-1e6, 1e6))
    refresh(timescale_url, today - DAY)
    for bucket in ROLLUP_VIEWS:
        for agg in ("sum", "avg"):
            query = q(today - 3 * DAY + timedelta(minutes=3), today, bucket, agg,
                      group_by="core")
            answer, raw = pg.metrics.query(query), raw_answer(pg, query)
            assert [s.labels for s in answer] == [s.labels for s in raw]
            for got, want in zip(answer, raw, strict=True):
                assert [p.time for p in got.points] == [p.time for p in want.points]
                assert [p.value for p in got.points] == pytest.approx(
                    [p.value for p in want.points], rel=1e-12, abs=1e-6)


@pytest.mark.timescaledb
def test_rollup_reaches_beyond_the_raw_retention(pg: PostgresRepositories,
                                                 timescale_url: str) -> None:
    """After the raw chunks are dropped, the rollup still answers (month-long queries)."""
    today = bucket_floor(datetime.now(UTC), DAY)
    load(pg, today - 60 * DAY, today - 50 * DAY, HOUR, lambda t, index: 2.0)
    refresh(timescale_url, today - 49 * DAY)
    with psycopg.connect(timescale_url) as conn:
        conn.execute("SELECT drop_chunks('samples', older_than => %s::timestamptz)",
                     (today - 40 * DAY,))
    query = q(today - 61 * DAY, today, "1d", "count", labels=(("core", "total"),))
    assert raw_answer(pg, query)[0].points == []
    assert pg.metrics.query(query)[0].points == [
        Point(today - d * DAY, 24.0) for d in range(60, 50, -1)]


@pytest.mark.timescaledb
def test_a_vanished_rollup_falls_back_to_the_raw_table(
        loaded: tuple[PostgresRepositories, datetime], timescale_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    pg, start = loaded
    query = q(start, start + 5 * DAY, "1d", "max")
    expected = pg.metrics.query(query)
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        conn.execute("SELECT remove_continuous_aggregate_policy('samples_1d')")
        conn.execute("DROP MATERIALIZED VIEW samples_1d")
    with caplog.at_level(logging.WARNING, logger="miniobserv.server.storage.postgres.metrics"):
        assert pg.metrics.query(query) == expected
    assert "rollup samples_1d is gone" in caplog.text
    assert not pg.metrics.serves_from_rollup(query)


@pytest.mark.integration
@pytest.mark.timescaledb
def test_a_short_metrics_retention_moves_the_rollup_windows_on_timescaledb(
        timescale_url: str) -> None:
    """On a real TimescaleDB: METRICS_RETENTION=2d puts the 1 h rollup's refresh window at
    47 h, inside the raw retention, and removes the 1 d rollup's policy (no safe window);
    a second start changes nothing more."""
    import psycopg

    from miniobserv.config import ServerConfig
    from miniobserv.server.storage import open_repositories, sync_retention
    from tests.server.storage.test_migrations import jobs

    config = ServerConfig(agent_token="x" * 32, database_url=timescale_url,
                          metrics_retention=timedelta(days=2))
    for _ in range(2):
        repos = open_repositories(config)
        try:
            assert sync_retention(repos, config) is True
        finally:
            repos.close()
        with psycopg.connect(timescale_url) as conn:
            policies = jobs(conn)
        refresh = {table: job for (table, name), job in policies.items()
                   if name == "policy_refresh_continuous_aggregate"}
        assert set(refresh) == {"samples_1h"}
        assert refresh["samples_1h"]["config"]["start_offset"] == "1 day 23:00:00"
        assert policies[("samples", "policy_retention")]["config"]["drop_after"] == "2 days"
