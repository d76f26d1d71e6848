"""State has limits too: retention never stalls evaluation, removed hosts stay quiet, the
``series`` table survives its migration both ways, and TimescaleDB's rollup refresh window
follows ``METRICS_RETENTION`` (issue 9, item 3)."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from miniobserv.config import ServerConfig
from miniobserv.model import Metric, MetricBatch
from miniobserv.server.alerting.evaluate import run_cycle
from miniobserv.server.alerting.service import AlertingService
from miniobserv.server.storage import migrate
from miniobserv.server.storage.postgres.db import refresh_start_offset
from tests.fakes import FakeFleet, FakeRepositories

SECRET = "s" * 32  # an AGENT_TOKEN of the minimum length or more


class BlockingFleet(FakeFleet):
    """A fleet whose retention delete blocks until ``release`` is set."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.entered = threading.Event()
        self.release = threading.Event()

    def delete_expired(self, *args: Any, **kwargs: Any) -> int:
        self.entered.set()
        self.release.wait(10)
        return super().delete_expired(*args, **kwargs)


def test_a_slow_retention_does_not_stall_evaluation() -> None:
    repos = FakeRepositories()
    repos.fleet = fleet = BlockingFleet(repos.metrics)
    config = ServerConfig(agent_token=SECRET, alert_interval=timedelta(seconds=1))
    service = AlertingService(config, repos).start()
    try:
        assert fleet.entered.wait(5), "retention never ran"
        cycles = fleet.cycles
        deadline = time.monotonic() + 5
        while fleet.cycles < cycles + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fleet.cycles >= cycles + 2, "evaluation stalled behind retention"
    finally:
        fleet.release.set()
        service.stop()


def test_a_host_removed_by_retention_sends_no_further_host_down() -> None:
    repos = FakeRepositories()
    config = ServerConfig(agent_token=SECRET)
    old = datetime.now(UTC) - timedelta(days=31)
    repos.metrics.insert_batch(MetricBatch("gone-01", [Metric(old, "gone-01", "mem.used_pct", 1.0)]))
    repos.metrics.host_seen["gone-01"] = old  # last batch 31 days ago
    now = datetime.now(UTC)
    assert [e["event"] for e in run_cycle(repos.fleet, config, now).events] == ["host.down"]
    repos.fleet.delete_expired(now - config.metrics_retention, now, now)
    assert repos.fleet.last_seen() == [] and repos.fleet.host_states() == []
    for minutes in (1, 60, 60 * 24):
        assert run_cycle(repos.fleet, config, now + timedelta(minutes=minutes)).events == []


# --- migration 0006 ------------------------------------------------------------------------

def check_series_migration(url: str, execute: Any) -> None:
    """0006 backfills one series per (host, name, labels) from metrics, whatever the key
    order of the stored labels; its downgrade drops the table; upgrading again refills it."""
    migrate.upgrade(url, "0005")
    execute("INSERT INTO metrics (time, host, name, value, labels) VALUES "
            "({t1}, 'h1', 'cpu.usage_pct', 1, '{{\"core\":\"0\",\"a\":\"b\"}}'),"
            "({t2}, 'h1', 'cpu.usage_pct', 2, '{{\"a\":\"b\",\"core\":\"0\"}}'),"
            "({t1}, 'h1', 'mem.used_pct', 3, '{{}}'),"
            "({t2}, 'h2', 'mem.used_pct', 4, '{{}}')")
    for _ in range(2):
        migrate.upgrade(url)
        rows = execute("SELECT host, name, labels_text FROM series ORDER BY host, name")
        assert [tuple(row) for row in rows] == [
            ("h1", "cpu.usage_pct", '{"a":"b","core":"0"}'), ("h1", "mem.used_pct", "{}"),
            ("h2", "mem.used_pct", "{}")]
        migrate.downgrade(url, "0005")
        with pytest.raises(Exception, match="series"):
            execute("SELECT count(*) FROM series")


def test_series_migration_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "s.db"

    def execute(statement: str) -> list[Any]:
        with sqlite3.connect(path) as conn:
            return conn.execute(statement.format(t1=1_000_000, t2=2_000_000)).fetchall()

    check_series_migration(f"sqlite:///{path}", execute)


@pytest.mark.integration
def test_series_migration_on_postgres(postgres_databases: Any) -> None:
    empty_postgres_url = postgres_databases.create(migrated=False)

    def execute(statement: str) -> list[Any]:
        with psycopg.connect(empty_postgres_url) as conn:
            cursor = conn.execute(statement.format(t1="'2026-06-01T00:00:00Z'",
                                                   t2="'2026-06-01T00:01:00Z'"))
            return cursor.fetchall() if cursor.description else []

    try:
        check_series_migration(empty_postgres_url, execute)
    finally:
        postgres_databases.drop(empty_postgres_url)


# --- TimescaleDB: the rollup refresh window follows METRICS_RETENTION ----------------------

@pytest.mark.parametrize(("retention", "hourly", "daily"), [
    (timedelta(days=30), timedelta(days=3), timedelta(days=3)),  # 0005's window
    (timedelta(days=3, hours=1), timedelta(days=3), timedelta(days=3)),
    (timedelta(days=3), timedelta(days=3, hours=-1), timedelta(days=3, hours=-1)),
    (timedelta(days=2, hours=2), timedelta(days=2, hours=1), timedelta(days=2, hours=1)),
    (timedelta(days=2, hours=1), timedelta(days=2), None),  # below 1 h + two 1-day buckets
    (timedelta(hours=4), timedelta(hours=3), None),
    (timedelta(hours=3), None, None),
])
def test_the_refresh_window_stays_inside_the_raw_retention(
        retention: timedelta, hourly: timedelta | None, daily: timedelta | None) -> None:
    assert refresh_start_offset(retention, timedelta(hours=1)) == hourly
    assert refresh_start_offset(retention, timedelta(days=1)) == daily
    for start in (hourly, daily):
        assert start is None or start < retention  # a refresh never reaches dropped chunks

