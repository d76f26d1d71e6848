"""Migration 0010 on TimescaleDB: samples compressed by the job ``compress_samples``.

The job replaces 0007's compression policy with the same schedule and ``compress_after``; a
chunk it compresses has batches of up to 8640 points (one day of a 10 s series) and its
compressed columns LZ4-packed (pglz where PostgreSQL lacks LZ4). Query answers are the same
before and after compression and packing, after a late point recompresses a packed chunk,
after ``downgrade`` (0007's policy is back, packed chunks still read) and after ``upgrade``
again. Every test skips where the test server has no TimescaleDB.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from miniobserv.model import Metric, MetricBatch
from miniobserv.server.storage import migrate, open_repositories
from miniobserv.server.storage.base import MetricQuery, Series
from miniobserv.server.storage.postgres import PostgresRepositories
from tests.server.storage.conftest import config_for
from tests.server.storage.test_migrations import policies

pytestmark = [pytest.mark.integration, pytest.mark.timescaledb]

STEP = timedelta(seconds=10)
POINTS = 1500  # per series, in one day's chunk: more than TimescaleDB's default batch of 1000
HOSTS = ("web-01", "web-02")
JOB_CONFIG = {"compress_after": "7 days", "batch_size_limit": 8640}


def compression_job(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
    row = conn.execute("SELECT job_id, config, schedule_interval, initial_start, scheduled"
                       " FROM timescaledb_information.jobs WHERE proc_name = 'compress_samples'"
                       " AND proc_schema = current_schema()").fetchone()
    if row is None:
        return None
    return dict(zip(("job_id", "config", "schedule", "initial_start", "scheduled"), row,
                    strict=True))


def lz4_available(conn: psycopg.Connection[Any]) -> bool:
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('default_toast_compression', 'lz4', true)")
    except psycopg.errors.InvalidParameterValue:
        return False
    return True


def compressed_chunks(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Per compressed chunk of samples: its biggest batch and the storage and compression
    of its ``value`` column."""
    chunks = conn.execute(
        "SELECT format('%I.%I', z.schema_name, z.table_name)"
        " FROM _timescaledb_catalog.chunk c JOIN _timescaledb_catalog.chunk z"
        " ON z.id = c.compressed_chunk_id JOIN _timescaledb_catalog.hypertable h"
        " ON h.id = c.hypertable_id WHERE h.table_name = 'samples'").fetchall()
    out = []
    for (name,) in chunks:
        # The name comes from TimescaleDB's catalog, quoted by format('%I.%I').
        biggest = conn.execute(f"SELECT max(_ts_meta_count) FROM {name}").fetchone()
        column = conn.execute("SELECT attstorage, attcompression FROM pg_attribute"
                              " WHERE attrelid = %s::regclass AND attname = 'value'",
                              (name,)).fetchone()
        assert biggest is not None and column is not None
        out.append((biggest[0], *column))
    return out


def run_job(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        job = compression_job(conn)
        assert job is not None
        conn.execute("CALL run_job(%s)", (job["job_id"],))


@pytest.fixture
def timescale_data(postgres_databases: Any) -> Iterator[tuple[str, datetime]]:
    """A database at head with samples a hypertable, and two series of POINTS points each
    ten days old (past compress_after) with the start of their range."""
    url = postgres_databases.create()
    try:
        with psycopg.connect(url) as conn:
            if compression_job(conn) is None:
                pytest.skip("needs TimescaleDB")
        start = datetime.now(UTC).replace(hour=1, minute=0, second=0, microsecond=0) \
            - timedelta(days=10)
        repos = open_repositories(config_for(url))
        try:
            for host in HOSTS:
                points = [Metric(start + i * STEP, host, "cpu.usage_pct",
                                 round(40 + (i * 7919 % 1000) / 10 + len(host), 1),
                                 {"core": "total"}) for i in range(POINTS)]
                for first in range(0, POINTS, 500):
                    repos.metrics.insert_batch(MetricBatch(host, points[first:first + 500]))
        finally:
            repos.close()
        yield url, start
    finally:
        postgres_databases.drop(url)


def answers(url: str, start: datetime) -> tuple[list[Series], ...]:
    """Every aggregate in 1 m buckets of one host, and the latest values of every host."""
    repos = open_repositories(config_for(url))
    assert isinstance(repos, PostgresRepositories)
    try:
        end = start + POINTS * STEP
        series = [repos.metrics.query(MetricQuery(host, "cpu.usage_pct", start, end, "1m", agg,
                                                  (("core", "total"),)))
                  for host in HOSTS for agg in ("avg", "min", "max", "sum", "count", "last")]
        latest = repos.fleet.latest(end - timedelta(minutes=5), name="cpu.usage_pct")
        return tuple(series), tuple(latest)
    finally:
        repos.close()


def test_0010_replaces_the_compression_policy_with_its_job(timescale_url: str) -> None:
    with psycopg.connect(timescale_url) as conn:
        job = compression_job(conn)
        samples_policies = policies(conn)
        lz4 = lz4_available(conn)
        procedures = {row[0] for row in conn.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace = current_schema()::regnamespace"
            " AND prokind = 'p'")}
    assert job is not None
    assert job["config"] == {**JOB_CONFIG, "toast_compression": "lz4" if lz4 else "pglz"}
    assert job["schedule"] == timedelta(hours=12) and job["scheduled"]
    assert set(samples_policies) == {"compress_samples", "policy_retention"}
    assert job["initial_start"] != samples_policies["policy_retention"]["initial_start"]
    assert procedures >= {"compress_samples", "pack_samples_chunk"}


def test_0010_job_compresses_in_big_batches_and_packs(timescale_data: tuple[str, datetime]
                                                      ) -> None:
    url, start = timescale_data
    before = answers(url, start)
    assert [len(s.points) for s in before[0][0]] == [250]  # 1500 points in 1 m buckets
    run_job(url)
    with psycopg.connect(url) as conn:
        method = "l" if lz4_available(conn) else "p"
        chunks = compressed_chunks(conn)
    assert chunks == [(POINTS, "x", method)]  # one batch per series, packed
    assert answers(url, start) == before
    run_job(url)  # nothing left to do: the same chunk, the same answers
    with psycopg.connect(url) as conn:
        assert compressed_chunks(conn) == chunks
    assert answers(url, start) == before


def test_0010_job_leaves_statistics_on_the_compressed_chunk(
        timescale_data: tuple[str, datetime]) -> None:
    """The job ANALYZEs each compressed chunk: without statistics the planner took a
    compressed chunk for a few batches and read one series by decompressing all of it."""
    url, _ = timescale_data
    run_job(url)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT format('%I.%I', z.schema_name, z.table_name), r.reltuples,"
            " (SELECT count(*) FROM pg_stats AS p WHERE p.schemaname = z.schema_name"
            "  AND p.tablename = z.table_name)"
            " FROM _timescaledb_catalog.chunk c JOIN _timescaledb_catalog.chunk z"
            " ON z.id = c.compressed_chunk_id JOIN _timescaledb_catalog.hypertable h"
            " ON h.id = c.hypertable_id JOIN pg_class r ON r.relname = z.table_name"
            " JOIN pg_namespace n ON n.oid = r.relnamespace AND n.nspname = z.schema_name"
            " WHERE h.table_name = 'samples'").fetchall()
        assert rows, "the job compressed no chunk"
        for name, reltuples, stats in rows:
            # The name comes from TimescaleDB's catalog, quoted by format('%I.%I').
            batches = conn.execute(f"SELECT count(*) FROM {name}").fetchone()
            assert batches is not None
            assert reltuples == batches[0] == len(HOSTS)  # one batch per series
            assert stats > 0


def test_0010_late_point_into_a_packed_chunk(timescale_data: tuple[str, datetime]) -> None:
    url, start = timescale_data
    run_job(url)
    late = start + POINTS * STEP  # just after the last point, in the same chunk
    repos = open_repositories(config_for(url))
    try:
        repos.metrics.insert_batch(MetricBatch(HOSTS[0], [
            Metric(late, HOSTS[0], "cpu.usage_pct", 12.5, {"core": "total"})]))
    finally:
        repos.close()
    expected = answers(url, start + STEP)
    run_job(url)  # recompresses the chunk's new row
    with psycopg.connect(url) as conn:
        status = conn.execute("SELECT count(*) FILTER (WHERE is_compressed), count(*)"
                              " FROM timescaledb_information.chunks"
                              " WHERE hypertable_name = 'samples'").fetchone()
        uncompressed = conn.execute("SELECT count(*) FROM ONLY _timescaledb_internal."
                                    + chunk_of(conn)).fetchone()
    assert status == (1, 1) and uncompressed == (0,)
    assert answers(url, start + STEP) == expected
    assert expected[1][0].value == 12.5 and expected[1][0].time == late


def chunk_of(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT chunk_name FROM timescaledb_information.chunks"
                       " WHERE hypertable_name = 'samples'").fetchone()
    assert row is not None
    return str(row[0])


def test_0010_down_and_up_with_packed_data(timescale_data: tuple[str, datetime]) -> None:
    url, start = timescale_data
    run_job(url)
    packed = answers(url, start)
    migrate.downgrade(url, "0009")
    with psycopg.connect(url) as conn:
        assert compression_job(conn) is None
        samples_policies = policies(conn)
        left = conn.execute("SELECT count(*) FROM pg_proc WHERE proname IN"
                            " ('compress_samples', 'pack_samples_chunk')").fetchone()
    assert set(samples_policies) == {"policy_compression", "policy_retention"}
    assert samples_policies["policy_compression"]["config"]["compress_after"] == "7 days"
    assert left == (0,)
    assert answers(url, start) == packed  # packed chunks read as they are
    migrate.upgrade(url)
    with psycopg.connect(url) as conn:
        assert compression_job(conn) is not None
        assert set(policies(conn)) == {"compress_samples", "policy_retention"}
    run_job(url)
    assert answers(url, start) == packed


ROLLUP_VIEWS = ("samples_1h", "samples_1d")
_COMPRESSED_ROLLUP_CHUNKS = """SELECT count(*) FILTER (WHERE c.is_compressed), count(*)
    FROM timescaledb_information.chunks AS c
    JOIN timescaledb_information.continuous_aggregates AS a
        ON c.hypertable_name = a.materialization_hypertable_name
    WHERE a.view_name = %s"""


def rollup_answers(url: str, start: datetime) -> list[list[Series]]:
    """Whole hours and days from the rollups: every aggregate they keep, both hosts."""
    repos = open_repositories(config_for(url))
    assert isinstance(repos, PostgresRepositories)
    try:
        day = start.replace(hour=0)
        queries = [MetricQuery(host, "cpu.usage_pct", *span, bucket, agg, (("core", "total"),))
                   for host in HOSTS for agg in ("avg", "min", "max", "sum", "count", "last")
                   for bucket, span in (("1h", (start, start + 4 * timedelta(hours=1))),
                                        ("1d", (day, day + timedelta(days=1))))]
        assert all(repos.metrics.serves_from_rollup(query) for query in queries)
        return [repos.metrics.query(query) for query in queries]
    finally:
        repos.close()


def test_0010_rollups_compressed_with_the_same_answers(timescale_data: tuple[str, datetime]
                                                       ) -> None:
    url, start = timescale_data
    with psycopg.connect(url, autocommit=True) as conn:
        for view in ROLLUP_VIEWS:
            conn.execute("CALL refresh_continuous_aggregate(%s, %s, %s)",
                         (view, start - timedelta(days=1), start + timedelta(days=2)))
        settings = conn.execute(
            "SELECT a.view_name, s.attname, s.segmentby_column_index, s.orderby_asc"
            " FROM timescaledb_information.compression_settings AS s"
            " JOIN timescaledb_information.continuous_aggregates AS a"
            " ON s.hypertable_name = a.materialization_hypertable_name"
            " ORDER BY 1, 2").fetchall()
        after = {row[0]: row[1] for row in conn.execute(
            "SELECT hypertable_name, config ->> 'compress_after' FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_compression' AND hypertable_name LIKE 'samples_1_'")}
    assert settings == [("samples_1h", "bucket", None, True), ("samples_1h", "series_id", 1, None)]
    assert after == {"samples_1h": "7 days"}  # not samples_1d: see 0010
    before = rollup_answers(url, start)
    assert [len(s[0].points) for s in before[:2]] == [5, 1]  # 01:00 to 05:00; one day
    with psycopg.connect(url, autocommit=True) as conn:
        # What the policy does to chunks past 7 days, to all of them now.
        conn.execute("SELECT compress_chunk(c) FROM show_chunks('samples_1h') AS c")
        assert conn.execute(_COMPRESSED_ROLLUP_CHUNKS, ("samples_1h",)).fetchone() == (1, 1)
    assert rollup_answers(url, start) == before
    migrate.downgrade(url, "0009")
    with psycopg.connect(url) as conn:
        assert conn.execute(_COMPRESSED_ROLLUP_CHUNKS, ("samples_1h",)).fetchone() == (0, 1)
        assert conn.execute("SELECT count(*) FROM timescaledb_information.jobs WHERE"
                            " proc_name = 'policy_compression' AND hypertable_name LIKE"
                            " 'samples_1_'").fetchone() == (0,)
    assert rollup_answers(url, start) == before
