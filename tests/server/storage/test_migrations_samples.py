"""Migration 0007 (series + narrow samples) with data in the old shape (SPEC §7, issue 10).

0006 -> head -> 0006 -> head on SQLite, plain PostgreSQL and TimescaleDB, moving in steps
of one page / row / series so that the bounded batches are all exercised: every old point is
a sample of its series afterwards (series missing from ``series`` are created; label sets
spelled in another key order are one series; of points sharing a series and a time the
greatest value stays), the downgrade gives back the same points in ``metrics`` and the
second upgrade the same samples again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import alembic.command
import psycopg
import pytest

from miniobserv.server.storage import migrate
from miniobserv.server.storage.base import to_micros
from miniobserv.server.storage.postgres import db as postgres_db
from tests.server.storage.test_migrations import compression_settings, jobs, table_names

Point = tuple[str, str, str, datetime, float]  # host, name, canonical labels, time, value
Execute = Callable[..., list[tuple[Any, ...]]]


def old_rows(now: datetime) -> list[tuple[str, str, str, datetime, float]]:
    """``metrics`` rows as the old repositories stored them (labels as sent)."""
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    rows = [("web-01", "cpu.usage_pct", json.dumps({"core": str(core), "a": "b"}),
             hour + timedelta(seconds=10 * i), float(i * core))
            for core in range(3) for i in range(40)]
    rows += [("web-02", "mem.used_pct", "{}", hour + timedelta(minutes=i), 50.0 + i)
             for i in range(30)]
    rows += [
        # one label set in two key orders: one series
        ("web-01", "disk.used_pct", '{"mount":"/","dev":"sda"}', hour, 1.0),
        ("web-01", "disk.used_pct", '{"dev":"sda","mount":"/"}', hour + timedelta(seconds=1), 2.0),
        # the same series and time twice: the greatest value stays
        ("web-03", "load.1m", '{"zone":"zürich"}', hour, 3.0),
        ("web-03", "load.1m", '{"zone":"zürich"}', hour, 7.5),
        ("web-03", "load.1m", '{"zone":"zürich"}', hour, -1.0),
        # ten days old: a compressed chunk on TimescaleDB
        ("web-04", "cpu.usage_pct", "{}", now - timedelta(days=10), 42.0),
    ]
    return rows


def expected_points(rows: list[tuple[str, str, str, datetime, float]]) -> set[Point]:
    best: dict[tuple[str, str, str, datetime], float] = {}
    for host, name, labels, time, value in rows:
        key = (host, name, canonical(json.loads(labels)), time)
        best[key] = max(value, best.get(key, value))
    return {(*key, value) for key, value in best.items()}


def canonical(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


def upgrade(url: str, revision: str = "head", *, timescaledb: bool = True) -> None:
    cfg = migrate.alembic_config(url, timescaledb=timescaledb)
    cfg.attributes["move_batch"] = 1  # one page, row or series per statement
    alembic.command.upgrade(cfg, revision)


def downgrade(url: str, revision: str) -> None:
    cfg = migrate.alembic_config(url)
    cfg.attributes["move_batch"] = 1
    alembic.command.downgrade(cfg, revision)


def check_round_trip(url: str, execute: Execute, to_db: Callable[[datetime], Any],
                     from_db: Callable[[Any], datetime], **options: Any) -> None:
    now = datetime.now(UTC)
    rows = old_rows(now)
    expected = expected_points(rows)
    insert = "INSERT INTO metrics (time, host, name, value, labels) VALUES (?, ?, ?, ?, ?)"
    upgrade(url, "0005", **options)
    for host, name, labels, time, value in rows[:-4]:  # 0006 backfills their series
        execute(insert, to_db(time), host, name, value, labels)
    upgrade(url, "0006", **options)
    for host, name, labels, time, value in rows[-4:]:  # no series yet: 0007 creates them
        execute(insert, to_db(time), host, name, value, labels)

    def samples() -> set[Point]:
        return {(host, name, text, from_db(time), value) for host, name, text, time, value in
                execute("SELECT s.host, s.name, s.labels_text, x.time, x.value FROM samples x"
                        " JOIN series s ON s.id = x.series_id")}

    def metrics() -> set[Point]:
        return {(host, name, canonical(json.loads(labels) if isinstance(labels, str) else labels),
                 from_db(time), value) for time, host, name, value, labels in
                execute("SELECT time, host, name, value, labels FROM metrics")}

    upgrade(url, **options)
    assert "metrics" not in table_names(url)
    assert samples() == expected
    count = execute("SELECT count(*) FROM samples")[0][0]
    assert count == len(expected)
    assert execute("SELECT count(*) FROM series")[0][0] == len({p[:3] for p in expected})
    downgrade(url, "0006")
    assert "samples" not in table_names(url)
    assert metrics() == expected
    upgrade(url, **options)
    assert samples() == expected


def test_sqlite_samples_migration_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "s.db"

    def execute(statement: str, *params: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as conn:
            return conn.execute(statement, params).fetchall()

    check_round_trip(f"sqlite:///{path}", execute, to_micros,
                     lambda micros: datetime(1970, 1, 1, tzinfo=UTC)
                     + timedelta(microseconds=micros))
    with sqlite3.connect(path) as conn:
        ddl = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'samples'").fetchone()[0]
    assert "WITHOUT ROWID" in ddl


def postgres_executor(url: str) -> Execute:
    def execute(statement: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(url) as conn:
            cur = conn.execute(statement.replace("?", "%s"), params or None)
            return cur.fetchall() if cur.description else []
    return execute


@pytest.mark.integration
def test_plain_postgres_samples_migration_round_trip(empty_postgres_url: str) -> None:
    check_round_trip(empty_postgres_url, postgres_executor(empty_postgres_url), lambda t: t,
                     lambda t: t.astimezone(UTC), timescaledb=False)
    with psycopg.connect(empty_postgres_url) as conn:
        assert not postgres_db.is_hypertable(conn, "samples")
        indexes = {row[0] for row in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'samples'")}
    assert indexes == {"pk_samples", "ix_samples_time"}


def hypertable_metrics_at(url: str, revision: str) -> Execute:
    """``url`` upgraded to ``revision`` with ``metrics`` a hypertable (else the test skips);
    its executor."""
    upgrade(url, revision)
    with psycopg.connect(url) as conn:
        if not postgres_db.is_hypertable(conn, "metrics"):
            pytest.skip("needs TimescaleDB")
    return postgres_executor(url)


@pytest.mark.integration
@pytest.mark.timescaledb
def test_timescaledb_samples_migration_round_trip(postgres_databases: Any) -> None:
    url = postgres_databases.create(migrated=False)
    try:
        execute = hypertable_metrics_at(url, "0001")
        check_round_trip(url, execute, lambda t: t, lambda t: t.astimezone(UTC))
        with psycopg.connect(url) as conn:
            assert postgres_db.is_hypertable(conn, "samples")
            assert compression_settings(conn, "samples") == [
                ("series_id", 1, None), ("time", None, True)]
            policies = {name for table, name in jobs(conn) if table == "samples"}
            views = {row[0] for row in conn.execute(
                "SELECT view_name FROM timescaledb_information.continuous_aggregates")}
            compressed = conn.execute(
                "SELECT count(*) FROM timescaledb_information.chunks"
                " WHERE hypertable_name = 'samples' AND is_compressed").fetchone()
        assert policies == {"compress_samples", "policy_retention"}  # 0010's compression job
        assert views == {"samples_1h", "samples_1d"}
        assert compressed == (1,)  # the ten-day-old point's chunk
        # The rollup holds what the raw samples give.
        rollup = execute("SELECT s.host, v.bucket, v.count, v.max, v.last_value FROM samples_1h v"
                         " JOIN series s ON s.id = v.series_id WHERE s.name = 'load.1m'")
        assert [(h, c, m, last) for h, _, c, m, last in rollup] == [("web-03", 1, 7.5, 7.5)]
    finally:
        postgres_databases.drop(url)


@pytest.mark.integration
@pytest.mark.timescaledb
def test_refusing_timescaledb_at_0007_still_drops_the_old_hypertable(
        postgres_databases: Any) -> None:
    """metrics a hypertable with 0005's rollups, then ``timescaledb=False``: samples is a
    plain table, the rollups and policies of metrics are gone with it."""
    url = postgres_databases.create(migrated=False)
    try:
        execute = hypertable_metrics_at(url, "0006")
        execute("INSERT INTO metrics (time, host, name, value, labels)"
                " VALUES (now(), 'h', 'mem.used_pct', 1.5, '{}')")
        upgrade(url, timescaledb=False)
        with psycopg.connect(url) as conn:
            assert not postgres_db.is_hypertable(conn, "samples")
            assert {table for table, _ in jobs(conn)} == {"logs"}  # its own, kept
            assert conn.execute("SELECT count(*) FROM timescaledb_information"
                                ".continuous_aggregates").fetchone() == (0,)
        assert execute("SELECT s.name, x.value FROM samples x JOIN series s"
                       " ON s.id = x.series_id") == [("mem.used_pct", 1.5)]
    finally:
        postgres_databases.drop(url)
