"""Migration 0002 (logs) up and down on SQLite, plain PostgreSQL and TimescaleDB (SPEC §7).

The round trip through ``base`` and the schema comparison with ``tables.py`` live in
``test_migrations.py``; here: 0001 <-> 0002 keeps the metrics data, ids are never reused,
the trigram index serves search, a role that may not create pg_trgm still migrates, and the
TimescaleDB hypertable and its policies.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.pool import NullPool

from miniobserv.config import ServerConfig
from miniobserv.model import LogBatch, LogEntry
from miniobserv.server.storage import migrate, open_repositories, sync_retention
from miniobserv.server.storage.base import LogQuery, to_micros
from miniobserv.server.storage.postgres import db as postgres_db
from tests.server.storage.conftest import config_for
from tests.server.storage.test_migrations import (
    chunk_interval,
    compression_settings,
    jobs,
    table_names,
    url_as,
)

T0 = datetime(2026, 6, 5, 10, 0, 0, tzinfo=UTC)


def store_a_metric_and_a_log(url: str) -> None:
    """A metric (and a log entry, once the logs table exists), written as the repositories of
    that revision did: today's repositories need the head schema (``series``, 0006)."""
    time = to_micros(T0) if url.startswith("sqlite") else T0
    engine = sa.create_engine(migrate.sqlalchemy_url(url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO metrics (time, host, name, value, labels)"
                                 " VALUES (:t, 'h', 'mem.used_pct', 1.0, '{}')"), {"t": time})
            if "logs" in table_names(url):
                conn.execute(sa.text("INSERT INTO logs (time, host, level, message, labels)"
                                     " VALUES (:t, 'h', 'info', 'hello', '{}')"), {"t": time})
    finally:
        engine.dispose()


def metric_count(url: str) -> int:
    engine = sa.create_engine(migrate.sqlalchemy_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM metrics")).scalar_one())
    finally:
        engine.dispose()


def up_and_down(url: str, **upgrade_options: Any) -> None:
    """0001 -> 0002 -> 0001 -> 0002, with data: the logs table comes and goes, metrics stay."""
    migrate.upgrade(url, "0001", **upgrade_options)
    store_a_metric_and_a_log(url)
    assert "logs" not in table_names(url)
    migrate.upgrade(url, "0002", **upgrade_options)
    assert migrate.current_revision(url) == "0002"
    assert table_names(url) == {"metrics", "ingested_batches", "hosts", "logs"}
    store_a_metric_and_a_log(url)
    migrate.downgrade(url, "0001")
    assert migrate.current_revision(url) == "0001"
    assert "logs" not in table_names(url)
    assert metric_count(url) == 2
    migrate.upgrade(url, "0002", **upgrade_options)
    store_a_metric_and_a_log(url)
    assert metric_count(url) == 3


def test_sqlite_0002_up_and_down(tmp_path: Path) -> None:
    up_and_down(f"sqlite:///{tmp_path / 'logs.db'}")


def test_sqlite_ids_are_never_reused(tmp_path: Path) -> None:
    """AUTOINCREMENT: deleting the newest entries does not hand their ids out again."""
    url = f"sqlite:///{tmp_path / 'ids.db'}"
    migrate.upgrade(url, "0002")
    repos = open_repositories(config_for(url))
    try:
        repos.logs.insert_batch(LogBatch("h", [LogEntry(T0, "h", "info", f"m{i}")
                                               for i in range(3)]))
        with repos.db.write() as conn:  # type: ignore[union-attr]
            conn.execute("DELETE FROM logs WHERE id >= 2")
        repos.logs.insert_batch(LogBatch("h", [LogEntry(T0, "h", "info", "after")]))
        assert [e.id for e in repos.logs.query(LogQuery()).entries] == [4, 1]
    finally:
        repos.close()


# --- PostgreSQL ----------------------------------------------------------------------------

def index_names(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'logs'").fetchall()
    return {row[0] for row in rows}


@pytest.mark.integration
def test_plain_postgres_0002_up_and_down(empty_postgres_url: str) -> None:
    up_and_down(empty_postgres_url, timescaledb=False)
    with psycopg.connect(empty_postgres_url) as conn:
        assert not postgres_db.is_hypertable(conn, "logs")
        assert index_names(conn) == {"pk_logs", "ix_logs_host_id", "ix_logs_time",
                                     "ix_logs_message_trgm"}


@pytest.mark.integration
def test_postgres_search_uses_the_trigram_index(fresh_postgres_url: str) -> None:
    repos = open_repositories(config_for(fresh_postgres_url))
    try:
        repos.logs.insert_batch(LogBatch("h", [LogEntry(T0, "h", "info", f"line {i} ok")
                                               for i in range(200)]))
        repos.logs.insert_batch(LogBatch("h", [LogEntry(T0, "h", "error", "Disk 95% FULL")]))
    finally:
        repos.close()
    from miniobserv.server.storage.postgres.logs import build_query

    statement, params = build_query(LogQuery(search="95% full"))
    with psycopg.connect(fresh_postgres_url) as conn:
        conn.execute("SET enable_seqscan = off")  # tiny table: make the planner show its options
        plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {statement}", params))
        rows = conn.execute(statement, params).fetchall()
    assert "ix_logs_message_trgm" in plan, plan
    assert [row[4] for row in rows] == ["Disk 95% FULL"]


@pytest.mark.integration
def test_role_that_may_not_create_pg_trgm_still_migrates(
        postgres_url: str, empty_postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """No CREATE on the database: a warning, no trigram index, search still answers."""
    role = "miniobserv_logs_" + os.urandom(4).hex()
    ident = sql.Identifier(role)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        try:
            with psycopg.connect(empty_postgres_url, autocommit=True) as db:
                db.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(ident))
            with caplog.at_level(logging.WARNING, logger="alembic"):
                up_and_down(url_as(empty_postgres_url, role), timescaledb=False)
            repos = open_repositories(config_for(url_as(empty_postgres_url, role)))
            try:
                found = repos.logs.query(LogQuery(search="HELLO")).entries
            finally:
                repos.close()
            with psycopg.connect(empty_postgres_url) as conn:
                assert "ix_logs_message_trgm" not in index_names(conn)
        finally:
            with psycopg.connect(empty_postgres_url, autocommit=True) as db:
                db.execute(sql.SQL("DROP OWNED BY {}").format(ident))  # its tables and grants
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
    assert [e.message for e in found] == ["hello"]  # stored after the last upgrade
    messages = [r.getMessage() for r in caplog.records if "pg_trgm cannot be created" in
                r.getMessage()]
    assert len(messages) == 2 and "permission denied" in messages[0]


# --- TimescaleDB ---------------------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.timescaledb
def test_timescaledb_logs_hypertable_and_policies(timescale_url: str) -> None:
    with psycopg.connect(timescale_url) as conn:
        assert postgres_db.is_hypertable(conn, "logs")
        assert chunk_interval(conn, "logs") == timedelta(days=1)
        assert compression_settings(conn, "logs") == [
            ("host", 1, None), ("id", None, False), ("time", None, False)]
        policies = jobs(conn)
        assert index_names(conn) >= {"pk_logs", "ix_logs_message_trgm"}
    assert policies[("logs", "policy_compression")]["config"]["compress_after"] == "7 days"
    assert policies[("logs", "policy_retention")]["config"]["drop_after"] == "14 days"
    starts = [job["initial_start"] for job in policies.values()]
    tables = {table for table, _ in policies}
    assert tables == {"samples", "logs", "samples_1h", "samples_1d"}  # 0007 rebuilds 0005's rollups'
    assert len(policies) == 9 and None not in starts  # 0010 compresses samples_1h too
    assert len(set(starts)) == 9  # no two first runs of any policies collide


@pytest.mark.integration
@pytest.mark.timescaledb
def test_timescaledb_logs_survive_compression(timescale_url: str) -> None:
    """Old chunks compressed: paging and search still answer the same."""
    repos = open_repositories(config_for(timescale_url))
    try:
        for day in range(10, 0, -1):
            entries = [LogEntry(T0 - timedelta(days=day, minutes=i), "h", "info",
                                f"day {day} line {i}") for i in range(20)]
            repos.logs.insert_batch(LogBatch("h", entries))
        before = [repos.logs.query(LogQuery(limit=30, cursor=c)) for c in (None, 150, 40)]
        search = repos.logs.query(LogQuery(search="DAY 9 LINE 1"))
        with psycopg.connect(timescale_url, autocommit=True) as conn:
            compressed = conn.execute("SELECT compress_chunk(c) FROM show_chunks('logs',"
                                      " older_than => %s::timestamptz) c",
                                      (T0 - timedelta(days=5),)).fetchall()
        assert len(compressed) >= 4
        after = [repos.logs.query(LogQuery(limit=30, cursor=c)) for c in (None, 150, 40)]
        assert after == before
        assert repos.logs.query(LogQuery(search="DAY 9 LINE 1")) == search
        assert len(search.entries) == 11  # line 1 and lines 10 to 19
    finally:
        repos.close()


@pytest.mark.integration
@pytest.mark.timescaledb
def test_timescaledb_0002_down_removes_the_logs_policies_only(timescale_url: str) -> None:
    migrate.downgrade(timescale_url, "0001")
    with psycopg.connect(timescale_url) as conn:
        assert set(jobs(conn)) == {("metrics", "policy_compression"),
                                   ("metrics", "policy_retention")}
        assert not postgres_db.is_hypertable(conn, "logs")
    migrate.upgrade(timescale_url)
    with psycopg.connect(timescale_url) as conn:
        assert postgres_db.is_hypertable(conn, "logs") and len(jobs(conn)) == 9  # 0005's too


@pytest.mark.integration
@pytest.mark.timescaledb
def test_sync_retention_applies_logs_retention_with_its_own_start(timescale_url: str) -> None:
    """LOGS_RETENTION replaces the logs policy only; METRICS_RETENTION the samples one."""
    with psycopg.connect(timescale_url) as conn:
        before = jobs(conn)
    repos = open_repositories(repos_config(timescale_url))
    try:
        assert sync_retention(repos, repos_config(timescale_url)) is True
        with psycopg.connect(timescale_url) as conn:
            after = jobs(conn)
    finally:
        repos.close()
    assert after[("logs", "policy_retention")]["config"]["drop_after"] == "3 days"
    assert after[("samples", "policy_retention")] == before[("samples", "policy_retention")]
    assert after[("logs", "policy_compression")] == before[("logs", "policy_compression")]
    starts = [job["initial_start"] for job in after.values()]
    assert len(set(starts)) == 9  # the new logs policy keeps clear of the others (0005's too)
    with psycopg.connect(timescale_url) as conn, pytest.raises(ValueError):
        postgres_db.sync_retention(conn, timedelta(days=1), "hosts")


def repos_config(url: str) -> ServerConfig:
    return ServerConfig(agent_token="x" * 32, database_url=url, logs_retention=timedelta(days=3))


def test_sync_retention_is_false_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    migrate.upgrade(url)
    repos = open_repositories(config_for(url))
    try:
        assert sync_retention(repos, repos_config(url)) is False
    finally:
        repos.close()
