"""Alembic migrations on SQLite, plain PostgreSQL and TimescaleDB (SPEC §7).

``upgrade head``, ``downgrade base`` and ``upgrade head`` again on every store; the result
matches ``tables.py``; several processes migrating one database at once all succeed; the
TimescaleDB parts (hypertable, compression, policies) and the fallback when the extension
cannot be loaded.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from psycopg import sql
from sqlalchemy.pool import NullPool

from miniobserv.model import LogBatch, LogEntry
from miniobserv.server.storage import migrate, open_repositories
from miniobserv.server.storage.base import BatchConflict, LogQuery
from miniobserv.server.storage.postgres import db as postgres_db
from miniobserv.server.storage.sqlite.db import enable_wal
from miniobserv.server.storage.tables import include_object, ingested_batches, metadata
from tests.conftest import ThrowawayCluster, find_pg_bindir, has_timescaledb_files
from tests.server.storage.conftest import config_for

OUR_TABLES = {"samples", "series", "ingested_batches", "hosts"}


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(migrate.sqlalchemy_url(url), poolclass=NullPool)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def schema_differences(url: str) -> list[Any]:
    """What ``alembic revision --autogenerate`` would add: nothing, if 0001 built tables.py."""
    engine = sa.create_engine(migrate.sqlalchemy_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn, warnings.catch_warnings():
            # SQLite cannot reflect expression indexes; autogenerate says so and skips them.
            warnings.filterwarnings("ignore", "autogenerate skipping", UserWarning)
            context = MigrationContext.configure(conn, opts={
                "compare_type": True,
                "include_object": partial(include_object, dialect=conn.dialect.name)})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def round_trip(url: str, *, compare_schema: bool = True, **upgrade_options: Any) -> None:
    migrate.upgrade(url, **upgrade_options)
    assert migrate.current_revision(url) == migrate.head_revision()
    assert table_names(url) >= OUR_TABLES
    if compare_schema:
        assert schema_differences(url) == []
    migrate.downgrade(url, "base")
    assert migrate.current_revision(url) is None
    assert table_names(url) == set()
    migrate.upgrade(url, **upgrade_options)
    assert table_names(url) >= OUR_TABLES


def test_sqlite_upgrade_downgrade_upgrade(tmp_path: Path) -> None:
    round_trip(f"sqlite:///{tmp_path / 'm.db'}")


def test_sqlite_file_is_left_in_wal_mode(tmp_path: Path) -> None:
    """The server's connections then never switch modes while others write (that fails)."""
    migrate.upgrade(f"sqlite:///{tmp_path / 'w.db'}")
    with sqlite3.connect(tmp_path / "w.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_wal_switch_waits_for_a_reader_of_the_old_journal(tmp_path: Path) -> None:
    """Switching to WAL fails at once while another connection reads: it is retried."""
    path = tmp_path / "w.db"
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    reader.execute("CREATE TABLE t (x)")
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM t").fetchall()  # a shared lock on the rollback journal
    switcher = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            enable_wal(switcher, timeout_s=0.1)
        release = threading.Timer(0.3, reader.execute, ["COMMIT"])
        release.start()
        assert enable_wal(switcher, timeout_s=30)
        release.join()
        assert switcher.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        switcher.close()
        reader.close()


def test_sqlite_url_translation_is_only_for_postgres() -> None:
    assert migrate.sqlalchemy_url("sqlite:///a.db") == "sqlite:///a.db"
    assert migrate.sqlalchemy_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert migrate.sqlalchemy_url("postgresql://u@h:5/d?x=1") == "postgresql+psycopg://u@h:5/d?x=1"


def test_alembic_command_line_takes_the_url_from_x_or_the_environment(tmp_path: Path) -> None:
    root = migrate.ROOT
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'env.db'}"}
    run = [sys.executable, "-m", "alembic", "-c", str(root / "alembic.ini")]
    subprocess.run([*run, "upgrade", "head"], cwd=root, env=env, check=True, capture_output=True)
    assert table_names(env["DATABASE_URL"]) >= OUR_TABLES
    x_url = f"sqlite:///{tmp_path / 'x.db'}"
    subprocess.run([*run, "-x", f"url={x_url}", "upgrade", "head"], cwd=root, env=env,
                   check=True, capture_output=True)
    assert table_names(x_url) >= OUR_TABLES
    subprocess.run([*run, "downgrade", "base"], cwd=root, env=env, check=True,
                   capture_output=True)
    assert table_names(env["DATABASE_URL"]) == set()


def migrate_at_once(url: str, processes: int = 4) -> list[subprocess.CompletedProcess[str]]:
    """Start ``processes`` interpreters that all call ``migrate.upgrade(url)`` at one instant."""
    start_at = time.time() + 3  # after every interpreter has imported alembic
    code = ("import sys, time; from miniobserv.server.storage import migrate; "
            "time.sleep(max(0, float(sys.argv[2]) - time.time())); migrate.upgrade(sys.argv[1])")
    children = [subprocess.Popen([sys.executable, "-c", code, url, str(start_at)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(processes)]
    results = []
    for child in children:
        out, err = child.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(child.args, child.returncode, out, err))
    return results


def test_sqlite_concurrent_migrations_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    results = migrate_at_once(url)
    assert [r.returncode for r in results] == [0] * 4, [r.stderr[-800:] for r in results]
    assert migrate.current_revision(url) == migrate.head_revision()


# --- PostgreSQL ----------------------------------------------------------------------------

@pytest.mark.integration
def test_postgres_upgrade_downgrade_upgrade(empty_postgres_url: str) -> None:
    round_trip(empty_postgres_url)


@pytest.mark.integration
def test_plain_postgres_upgrade_downgrade_upgrade(empty_postgres_url: str) -> None:
    """The plain-PostgreSQL path, also where TimescaleDB exists (``timescaledb=False``)."""
    round_trip(empty_postgres_url, timescaledb=False)
    with psycopg.connect(empty_postgres_url) as conn:
        assert not postgres_db.is_hypertable(conn, "samples")
        assert postgres_db.sync_retention(conn, timedelta(days=3)) is False


@pytest.mark.integration
def test_postgres_concurrent_migrations_all_succeed(empty_postgres_url: str) -> None:
    results = migrate_at_once(empty_postgres_url)
    assert [r.returncode for r in results] == [0] * 4, [r.stderr[-800:] for r in results]
    assert migrate.current_revision(empty_postgres_url) == migrate.head_revision()
    assert schema_differences(empty_postgres_url) == []


def claimed_batches(url: str) -> set[tuple[uuid.UUID, str]]:
    engine = sa.create_engine(migrate.sqlalchemy_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(ingested_batches.c.batch_id, ingested_batches.c.kind))
            return {(row.batch_id, row.kind) for row in rows}
    finally:
        engine.dispose()


def claim(url: str, batch_id: uuid.UUID, kind: str) -> None:
    engine = sa.create_engine(migrate.sqlalchemy_url(url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(ingested_batches.insert().values(
                batch_id=batch_id, kind=kind, received_at=datetime.now(UTC)))
    finally:
        engine.dispose()


def claimed_digests(url: str) -> dict[uuid.UUID, bytes | None]:
    engine = sa.create_engine(migrate.sqlalchemy_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(ingested_batches.c.batch_id, ingested_batches.c.digest))
            return {row.batch_id: row.digest for row in rows}
    finally:
        engine.dispose()


def check_batch_id_key_migration(url: str) -> None:
    """0004 keys batch ids by kind and adds digests, keeping the claims (without a digest);
    its downgrade keeps one claim per id; a claim without a digest acknowledges any batch."""
    first, second = uuid.uuid4(), uuid.uuid4()
    migrate.upgrade(url, "0003")
    claim(url, first, "metrics")
    claim(url, second, "logs")
    with pytest.raises(sa.exc.IntegrityError):
        claim(url, first, "logs")  # before 0004: one key space for both kinds
    migrate.upgrade(url, "0004")
    assert claimed_batches(url) == {(first, "metrics"), (second, "logs")}
    assert claimed_digests(url) == {first: None, second: None}
    claim(url, first, "logs")
    with pytest.raises(sa.exc.IntegrityError):
        claim(url, first, "logs")
    migrate.downgrade(url, "0003")
    assert claimed_batches(url) == {(first, "logs"), (second, "logs")}
    with pytest.raises(sa.exc.IntegrityError):
        claim(url, first, "metrics")
    migrate.upgrade(url)
    check_claims_without_digest(url, second)


def check_claims_without_digest(url: str, claimed: uuid.UUID) -> None:
    """At head: ``claimed`` (a logs claim older than digests) acknowledges any logs batch
    without storing it; a new claim gets a digest and refuses other content."""
    fresh = uuid.uuid4()
    entry = LogEntry(datetime(2026, 6, 5, tzinfo=UTC), "h1", "info", "m")
    repos = open_repositories(config_for(url))
    try:
        assert repos.logs.insert_batch(LogBatch("h1", [entry], claimed)) == 1
        assert repos.logs.insert_batch(LogBatch("h1", [entry, entry], claimed)) == 2
        assert repos.logs.query(LogQuery()).entries == []
        assert repos.logs.insert_batch(LogBatch("h1", [entry], fresh)) == 1
        with pytest.raises(BatchConflict):
            repos.logs.insert_batch(LogBatch("h1", [entry, entry], fresh))
        assert len(repos.logs.query(LogQuery()).entries) == 1
    finally:
        repos.close()
    digests = claimed_digests(url)
    assert digests[claimed] is None and len(digests[fresh] or b"") == 16


def test_sqlite_batch_ids_become_per_kind(tmp_path: Path) -> None:
    check_batch_id_key_migration(f"sqlite:///{tmp_path / 'k.db'}")


@pytest.mark.integration
def test_postgres_batch_ids_become_per_kind(empty_postgres_url: str) -> None:
    check_batch_id_key_migration(empty_postgres_url)


# --- TimescaleDB ---------------------------------------------------------------------------

def chunk_interval(conn: psycopg.Connection[Any], table: str) -> Any:
    """The time interval of one chunk of hypertable ``table``."""
    row = conn.execute("SELECT time_interval FROM timescaledb_information.dimensions"
                       " WHERE hypertable_name = %s", (table,)).fetchone()
    return row[0] if row else None


def compression_settings(conn: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
    """``(column, segmentby index, orderby asc)`` of hypertable ``table``, by column name."""
    return conn.execute("SELECT attname, segmentby_column_index, orderby_asc"
                        " FROM timescaledb_information.compression_settings"
                        " WHERE hypertable_name = %s ORDER BY attname", (table,)).fetchall()


def jobs(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Every policy of every hypertable, and 0010's job that compresses samples (as one of
    samples'). Their runs are not asserted: on PostgreSQL 15.20, TimescaleDB 2.28's
    background jobs report "Failed" at the end of a run (a known clash)."""
    rows = conn.execute("SELECT coalesce(hypertable_name, 'samples'), proc_name, job_id, config,"
                        " initial_start FROM timescaledb_information.jobs"
                        " WHERE hypertable_name IS NOT NULL OR proc_name = 'compress_samples'"
                        ).fetchall()
    return {(table, name): {"job_id": job, "config": config, "initial_start": start}
            for table, name, job, config, start in rows}


def policies(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    """The policies of the ``samples`` hypertable, by procedure name."""
    return {name: job for (table, name), job in jobs(conn).items() if table == "samples"}


@pytest.mark.integration
@pytest.mark.timescaledb
def test_timescaledb_hypertable_and_policies(timescale_url: str) -> None:
    with psycopg.connect(timescale_url) as conn:
        assert postgres_db.is_hypertable(conn, "samples")
        assert chunk_interval(conn, "samples") == timedelta(days=1)
        assert compression_settings(conn, "samples") == [("series_id", 1, None), ("time", None, True)]
        jobs = policies(conn)
    assert set(jobs) == {"compress_samples", "policy_retention"}  # 0010's job compresses
    assert jobs["compress_samples"]["config"]["compress_after"] == "7 days"
    assert jobs["policy_retention"]["config"]["drop_after"] == "30 days"
    starts = {job["initial_start"] for job in jobs.values()}
    assert len(starts) == 2 and None not in starts  # first runs cannot collide


@pytest.mark.integration
@pytest.mark.timescaledb
def test_timescaledb_downgrade_removes_policies(timescale_url: str) -> None:
    migrate.downgrade(timescale_url, "base")
    with psycopg.connect(timescale_url) as conn:
        assert policies(conn) == {}
        assert conn.execute("SELECT count(*) FROM timescaledb_information.hypertables"
                            ).fetchone() == (0,)
    assert table_names(timescale_url) == set()
    migrate.upgrade(timescale_url)
    with psycopg.connect(timescale_url) as conn:
        assert postgres_db.is_hypertable(conn, "samples")
        assert set(policies(conn)) == {"compress_samples", "policy_retention"}


@pytest.mark.integration
@pytest.mark.timescaledb
def test_sync_retention_replaces_the_policy_once(timescale_url: str) -> None:
    with psycopg.connect(timescale_url) as conn:
        compression = policies(conn)["compress_samples"]
        assert postgres_db.sync_retention(conn, timedelta(days=10)) is True
        first = policies(conn)["policy_retention"]
        assert first["config"]["drop_after"] == "10 days"
        assert postgres_db.sync_retention(conn, timedelta(hours=240)) is True  # same interval
        assert policies(conn)["policy_retention"]["job_id"] == first["job_id"]
        assert postgres_db.sync_retention(conn, timedelta(days=30)) is True
        jobs = policies(conn)
    assert jobs["policy_retention"]["config"]["drop_after"] == "30 days"
    assert jobs["compress_samples"] == compression
    assert jobs["policy_retention"]["initial_start"] != compression["initial_start"]


@pytest.mark.integration
@pytest.mark.timescaledb
def test_timescaledb_not_preloaded_falls_back_to_plain_tables(
        caplog: pytest.LogCaptureFixture) -> None:
    """Extension files installed, library not preloaded: a warning, then plain tables."""
    bindir = find_pg_bindir()
    if bindir is None or not has_timescaledb_files(bindir):
        pytest.skip("needs a local PostgreSQL with the timescaledb extension files")
    cluster = ThrowawayCluster(bindir, timescaledb=False)
    try:
        url = cluster.start()
        with caplog.at_level(logging.INFO, logger="alembic"):
            round_trip(url)
        with psycopg.connect(url) as conn:
            assert not postgres_db.has_timescaledb(conn)
    finally:
        cluster.destroy()
    assert any("timescaledb is installed but cannot be used" in r.getMessage()
               for r in caplog.records)


def url_as(url: str, role: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=role + "@" + parts.netloc.rpartition("@")[2]))


@pytest.mark.integration
@pytest.mark.timescaledb
def test_timescaledb_as_database_owner_and_without_the_right_to_create_it(
        timescale_url: str, postgres_url: str, postgres_databases: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    """A database owner gets TimescaleDB (trusted extension); a mere user gets plain tables."""
    role = "miniobserv_app_" + os.urandom(4).hex()
    ident = sql.Identifier(role)
    urls: list[str] = []
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        try:
            for owner in (True, False):
                urls.append(url := postgres_databases.create(migrated=False))
                database = sql.Identifier(urlsplit(url).path.lstrip("/"))
                if owner:
                    admin.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(database, ident))
                with psycopg.connect(url, autocommit=True) as db:
                    db.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(ident))
                with caplog.at_level(logging.INFO, logger="alembic"):
                    # Without rights, later revisions may skip extension-backed indexes too.
                    round_trip(url_as(url, role), compare_schema=owner)
                with psycopg.connect(url) as conn:
                    assert postgres_db.is_hypertable(conn, "samples") is owner
        finally:
            for url in urls:
                postgres_databases.drop(url)
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
    messages = [r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(messages) == 2 and "permission denied" in messages[0]  # twice: round trip


@pytest.mark.integration
def test_upgrade_of_a_database_at_head_does_not_wait_for_the_lock(fresh_postgres_url: str) -> None:
    """Workers starting while another migrates (holding the lock) go on when nothing is due."""
    with psycopg.connect(fresh_postgres_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (migrate.MIGRATION_LOCK_KEY,))
        worker = threading.Thread(target=migrate.upgrade, args=(fresh_postgres_url,),
                                  daemon=True)
        worker.start()
        worker.join(timeout=60)  # a bound for a hang, not a speed requirement
        assert not worker.is_alive()
