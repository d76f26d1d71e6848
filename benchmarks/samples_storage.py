"""Bytes per point of series + samples on PostgreSQL, TimescaleDB and SQLite, and migration
0007's time.

Storage (``--measure bytes``): the fleet workload of ``fleet_compare.py`` (``--hosts`` x nine
metrics at 10 s steps, ``--points`` in all, ending ``--days-ago`` days back so that every
chunk is past the compression policy's 7 days) is written through the PostgreSQL repository
(1000-point batches, ``insert_batch``: the server's ingest path without HTTP) into plain
PostgreSQL and TimescaleDB. Then ``VACUUM ANALYZE``, and on TimescaleDB every chunk is
compressed as migration 0010's job ``compress_samples`` compresses chunks after 7 days
(``compress_chunk`` before 0010), with where the compressed bytes go; with ``--rollups``,
the rollups' bytes too, filled and (samples_1h) compressed, outside the figure. Reported: bytes of ``samples``
(table, indexes, TOAST; ``hypertable_size``) and of ``series``, per stored point. On plain
PostgreSQL the samples are then packed into ``sample_blocks`` as the server's maintenance
job does once they are older than ``METRICS_PACK_AFTER`` (they all are: the workload ends
``--days-ago`` back), followed by ``VACUUM``, and the bytes are reported again: blocks with
the columns' lz4 compression (revision 0009), the same blocks rewritten with pglz for
comparison, and ``samples`` as VACUUM leaves it (empty pages the next narrow rows reuse)
and after ``REINDEX`` (what it really holds). SQLite:
the same through the SQLite repository; the file after a WAL checkpoint, and its pages of
``samples`` and of ``series`` (with its indexes) from ``dbstat`` when SQLite has it.

Query (``--measure query``, plain PostgreSQL): ``--hosts`` x nine metrics for 24 hours at
10 s steps; one series' 24 hours in 1 m buckets (avg), the repository's statement, under
``EXPLAIN (ANALYZE, TIMING OFF)``: the median execution time of ``--repeat`` runs, narrow,
then after packing everything.

Migration (``--measure migration``): the same points as rows of the old ``metrics`` table
(revision 0006, filled by COPY, series backfilled by 0006), then ``alembic upgrade 0007``
timed: seconds per million rows, on a cluster with PostgreSQL's default durability
settings (fsync on); on SQLite, rows inserted by executemany into a file at 0006.

    python benchmarks/samples_storage.py [--points 1000000] [--hosts 1000]
                                         [--stores postgres,timescaledb,sqlite]
                                         [--measure bytes,migration,query] [--rollups]

Every cluster is stopped and deleted at the end. Run by hand, never as a test.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fleet_compare import NINE, STEP_S, Workload, compress_every_chunk  # noqa: E402
from benchmarks.ingest import postgres_store  # noqa: E402
from miniobserv.config import ServerConfig  # noqa: E402
from miniobserv.model import Metric, MetricBatch  # noqa: E402
from miniobserv.server.storage import migrate  # noqa: E402
from miniobserv.server.storage.base import MetricQuery, labels_text, to_micros  # noqa: E402
from miniobserv.server.storage.postgres import PostgresRepositories  # noqa: E402
from miniobserv.server.storage.postgres.db import ROLLUP_VIEWS  # noqa: E402
from miniobserv.server.storage.postgres.metrics import build_query  # noqa: E402
from miniobserv.server.storage.sqlite import SQLiteRepositories  # noqa: E402


def batches(workload: Workload) -> Iterator[MetricBatch]:
    for index in range(workload.batches):
        host, points = workload.points_of(index)
        yield MetricBatch(host, [
            Metric(datetime.fromtimestamp(at, UTC), host, NINE[metric][0], value,
                   NINE[metric][1]) for at, metric, value in points])


def load(repos: PostgresRepositories | SQLiteRepositories, workload: Workload) -> float:
    """Write the workload through ``repos`` (closed afterwards); the seconds it took."""
    began = time.monotonic()
    try:
        for batch in batches(workload):
            repos.metrics.insert_batch(batch)
    finally:
        repos.close()
    return time.monotonic() - began


def relation_bytes(conn: psycopg.Connection, table: str, hyper: bool) -> int:
    size = "hypertable_size(%s::regclass)" if hyper else "pg_total_relation_size(%s::regclass)"
    row = conn.execute(f"SELECT {size}", (table,)).fetchone()  # one of two fixed texts
    return int(row[0]) if row and row[0] is not None else 0


# Per compressed chunk of samples: its batches, their points, and its heap (with its free space
# and visibility maps), TOAST (with its index) and indexes in bytes.
_COMPRESSED_PARTS = """SELECT format('%I.%I', z.schema_name, z.table_name)::regclass
    FROM _timescaledb_catalog.chunk AS c
    JOIN _timescaledb_catalog.chunk AS z ON z.id = c.compressed_chunk_id
    JOIN _timescaledb_catalog.hypertable AS h ON h.id = c.hypertable_id
    WHERE h.table_name = 'samples'"""
_FORKS = ("pg_relation_size({0}) + pg_relation_size({0}, 'fsm')"
          " + pg_relation_size({0}, 'vm')")


def compressed_breakdown(conn: psycopg.Connection, stored: int, total: int) -> str:
    """Where ``total`` (hypertable_size of samples) goes, per stored point."""
    parts = {"batches": 0, "points": 0, "heap": 0, "toast": 0, "indexes": 0}
    for (chunk,) in conn.execute(_COMPRESSED_PARTS).fetchall():
        # The chunk's name comes from TimescaleDB's catalog, quoted by format('%I.%I').
        batches, points = conn.execute(
            f"SELECT count(*), coalesce(sum(_ts_meta_count), 0) FROM {chunk}").fetchone()
        heap, toast, indexes = conn.execute(
            f"SELECT {_FORKS.format('r.oid')}, {_FORKS.format('r.reltoastrelid')}"
            " + pg_indexes_size(r.reltoastrelid), pg_indexes_size(r.oid)"
            " FROM pg_class AS r WHERE r.oid = %s::regclass", (str(chunk),)).fetchone()
        for key, value in zip(parts, (batches, points, heap, toast, indexes), strict=True):
            parts[key] += int(value)
    rest = total - parts["heap"] - parts["toast"] - parts["indexes"]
    per = f"{parts['points'] / parts['batches']:.0f}" if parts["batches"] else "-"
    return (f"{parts['batches']:,} compressed batches ({per} points each): heap"
            f" {parts['heap'] / stored:.3f}, TOAST {parts['toast'] / stored:.3f}, indexes"
            f" {parts['indexes'] / stored:.3f}, the rest (empty chunks, the root table)"
            f" {rest / stored:.3f} B/point")


_COMPRESSED_ROLLUP = """SELECT compression_enabled FROM timescaledb_information.continuous_aggregates
    WHERE view_name = %s"""


def rollup_bytes(conn: psycopg.Connection, stored: int) -> str:
    """The rollups filled, then compressed where that is enabled (0010: samples_1h); not
    part of the figure (the peers keep no rollups)."""
    sizes = []
    for view in ROLLUP_VIEWS.values():
        conn.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, now())")  # fixed names
        size = f"{view} {relation_bytes(conn, view, True) / stored:.3f}"
        row = conn.execute(_COMPRESSED_ROLLUP, (view,)).fetchone()
        if row is not None and row[0]:
            conn.execute("SELECT count(compress_chunk(c, if_not_compressed => true))"
                         " FROM show_chunks(%s::regclass) AS c", (view,))
            size += f", compressed {relation_bytes(conn, view, True) / stored:.3f}"
        sizes.append(size)
    return f"rollups (not in the figure), filled: {'; '.join(sizes)} B/point"


def measure_bytes(workload: Workload, timescaledb: bool, rollups: bool = False) -> None:
    with postgres_store(timescaledb) as store:
        url = store.url
        repos = PostgresRepositories(url, max_size=2).open()
        loaded = load(repos, workload)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE samples")
            conn.execute("VACUUM ANALYZE series")
        if timescaledb:
            compress_every_chunk(url, "samples")
        with psycopg.connect(url, autocommit=True) as conn:
            stored = int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])
            samples = relation_bytes(conn, "samples", timescaledb)
            series = relation_bytes(conn, "series", False)
            parts = compressed_breakdown(conn, stored, samples) if timescaledb else ""
            if timescaledb and rollups:
                parts += f"\n  {rollup_bytes(conn, stored)}"
        name = "TimescaleDB (chunks compressed)" if timescaledb else "plain PostgreSQL"
        print(f"{name}: {stored:,} points in {loaded:.1f} s ({stored / loaded:,.0f} points/s"
              f" through insert_batch, one process); samples {samples / stored:.2f} B/point,"
              f" series {series / stored:.2f} B/point, together"
              f" {(samples + series) / stored:.2f}")
        if parts:
            print(f"  samples: {parts}")
        if not timescaledb:
            measure_packed(url, stored, series)


def measure_packed(url: str, stored: int, series: int) -> None:
    """Pack everything (the maintenance job's call), VACUUM, and report the bytes again."""
    repos = PostgresRepositories(url, max_size=1).open()
    began = time.monotonic()
    try:
        packed = repos.fleet.pack_samples(datetime.now(UTC) - ServerConfig.metrics_pack_after)
    finally:
        repos.close()
    took = time.monotonic() - began
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE samples")
        conn.execute("VACUUM ANALYZE sample_blocks")
        narrow = int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])
        blocks, points = conn.execute("SELECT count(*), sum(cardinality(times))"
                                      " FROM sample_blocks").fetchone()
        methods = conn.execute("SELECT string_agg(DISTINCT pg_column_compression(vals), ',')"
                               " FROM sample_blocks").fetchone()[0]
        lz4 = relation_bytes(conn, "sample_blocks", False)
        left = relation_bytes(conn, "samples", False)
        conn.execute("REINDEX TABLE samples")
        reindexed = relation_bytes(conn, "samples", False)
        # The same blocks recompressed with pglz (array_cat hands over a detoasted copy).
        conn.execute("CREATE TABLE blocks_pglz (LIKE sample_blocks INCLUDING ALL)")
        conn.execute("ALTER TABLE blocks_pglz ALTER COLUMN times SET COMPRESSION pglz,"
                     " ALTER COLUMN vals SET COMPRESSION pglz")
        conn.execute("INSERT INTO blocks_pglz SELECT series_id, start,"
                     " array_cat(times, '{}'), array_cat(vals, '{}') FROM sample_blocks")
        conn.execute("VACUUM ANALYZE blocks_pglz")
        pglz = relation_bytes(conn, "blocks_pglz", False)
    total = stored
    print(f"plain PostgreSQL packed: {packed:,} samples into {blocks:,} blocks"
          f" ({points:,} points, {points / max(blocks, 1):.0f} a block, {narrow:,} left narrow)"
          f" in {took:.1f} s; compressed with {methods or 'nothing'}")
    print(f"  sample_blocks {lz4 / total:.2f} B/point (lz4), {pglz / total:.2f} (pglz);"
          f" samples after VACUUM {left / total:.2f} B/point of reusable pages,"
          f" after REINDEX {reindexed / total:.2f}; series {series / total:.2f}")
    print(f"  together (lz4, samples reindexed) {(lz4 + reindexed + series) / total:.2f}"
          f" B/point; with samples' reusable pages {(lz4 + left + series) / total:.2f}")


def execution_ms(conn: psycopg.Connection, statement: Any, params: dict[str, Any],
                 repeat: int) -> float:
    """The median ``Execution Time`` of ``statement`` under EXPLAIN ANALYZE (no timing)."""
    explain = sql.SQL("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) ") + statement
    times = [float(conn.execute(explain, params).fetchone()[0][0]["Execution Time"])
             for _ in range(repeat)]
    return statistics.median(times)


def measure_query(hosts: int, repeat: int) -> None:
    """One series, 24 h in 1 m buckets, avg: narrow, then packed."""
    steps = 24 * 3600 // STEP_S
    newest = int(datetime.now(UTC).timestamp()) - 3 * 3600
    workload = Workload(hosts, hosts * len(NINE) * steps, newest - newest % STEP_S)
    end = datetime.fromtimestamp(workload.newest, UTC)
    wanted = MetricQuery(workload.host(0), NINE[0][0], end - timedelta(hours=24), end,
                         bucket="1m", agg="avg", labels=tuple(NINE[0][1].items()))
    with postgres_store(False) as store:
        load(PostgresRepositories(store.url, max_size=2).open(), workload)
        figures = {}
        with psycopg.connect(store.url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE samples")
            figures["narrow"] = execution_ms(conn, *build_query(wanted), repeat)
        repos = PostgresRepositories(store.url, max_size=1).open()
        try:
            repos.fleet.pack_samples(datetime.now(UTC))
            answer = repos.metrics.query(wanted)
        finally:
            repos.close()
        with psycopg.connect(store.url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE samples")
            conn.execute("VACUUM ANALYZE sample_blocks")
            figures["packed"] = execution_ms(conn, *build_query(wanted, packed=True), repeat)
    print(f"one series, 24 h in 1 m buckets (avg), {workload.total:,} points stored,"
          f" {len(answer[0].points)} buckets: median of {repeat} EXPLAIN ANALYZE runs:"
          f" narrow {figures['narrow']:.2f} ms, packed {figures['packed']:.2f} ms"
          f" ({figures['packed'] / figures['narrow']:.2f}x)")


def load_old_rows(url: str, workload: Workload) -> int:
    rows = 0
    with psycopg.connect(url) as conn, conn.cursor().copy(
            "COPY metrics (time, host, name, value, labels) FROM STDIN") as copy:
        for batch in batches(workload):
            for m in batch.metrics:
                copy.write_row((m.time, m.host, m.name, m.value, labels_text(m.labels)))
                rows += 1
    return rows


def measure_migration(workload: Workload, timescaledb: bool) -> None:
    with postgres_store(timescaledb) as store:
        url = store.url
        migrate.downgrade(url, "0005")  # an empty database: only the old tables
        rows = load_old_rows(url, workload)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE metrics")
        migrate.upgrade(url, "0006", timescaledb=timescaledb)
        began = time.monotonic()
        migrate.upgrade(url, "0007", timescaledb=timescaledb)
        took = time.monotonic() - began
        with psycopg.connect(url) as conn:
            moved = int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])
    name = "TimescaleDB" if timescaledb else "plain PostgreSQL"
    print(f"{name}: upgrade 0006 -> 0007 moved {moved:,} of {rows:,} rows in {took:.1f} s"
          f" = {took / rows * 1e6:.1f} s per million rows")


def sqlite_pages(conn: sqlite3.Connection, names: tuple[str, ...]) -> int | None:
    """Bytes of the b-trees ``names`` (tables and indexes) from ``dbstat``, or None."""
    try:
        row = conn.execute(f"SELECT sum(pgsize) FROM dbstat WHERE name IN"
                           f" ({', '.join('?' * len(names))})", names).fetchone()
    except sqlite3.OperationalError:  # SQLite built without SQLITE_ENABLE_DBSTAT_VTAB
        return None
    return int(row[0] or 0)


def measure_sqlite_bytes(workload: Workload) -> None:
    root = Path(tempfile.mkdtemp(prefix="miniobserv-bench-"))
    path = root / "miniobserv.db"
    try:
        migrate.upgrade(f"sqlite:///{path}")
        repos = SQLiteRepositories(f"sqlite:///{path}")
        loaded = load(repos, workload)
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            stored = int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])
            samples = sqlite_pages(conn, ("samples",))
            series = sqlite_pages(conn, ("series", "sqlite_autoindex_series_1",
                                         "ix_series_last_seen"))
        size = sum(p.stat().st_size for p in root.iterdir())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    parts = "" if samples is None or series is None else \
        f"; samples {samples / stored:.2f} B/point, series {series / stored:.2f} B/point"
    print(f"SQLite {sqlite3.sqlite_version}: {stored:,} points in {loaded:.1f} s"
          f" ({stored / loaded:,.0f} points/s through insert_batch, one process);"
          f" file {size / stored:.2f} B/point{parts}")


def measure_sqlite_migration(workload: Workload) -> None:
    root = Path(tempfile.mkdtemp(prefix="miniobserv-bench-"))
    url = f"sqlite:///{root / 'miniobserv.db'}"
    try:
        migrate.upgrade(url, "0005")
        rows = 0
        with sqlite3.connect(root / "miniobserv.db") as conn:
            for batch in batches(workload):
                conn.executemany("INSERT INTO metrics (time, host, name, value, labels)"
                                 " VALUES (?, ?, ?, ?, ?)",
                                 [(to_micros(m.time), m.host, m.name, m.value,
                                   labels_text(m.labels)) for m in batch.metrics])
                rows += len(batch.metrics)
        migrate.upgrade(url, "0006")
        began = time.monotonic()
        migrate.upgrade(url, "0007")
        took = time.monotonic() - began
        with sqlite3.connect(root / "miniobserv.db") as conn:
            moved = int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"SQLite: upgrade 0006 -> 0007 moved {moved:,} of {rows:,} rows in {took:.1f} s"
          f" = {took / rows * 1e6:.1f} s per million rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--days-ago", type=float, default=10.0)
    parser.add_argument("--stores", default="postgres,timescaledb")
    parser.add_argument("--measure", default="bytes,migration")
    parser.add_argument("--repeat", type=int, default=31)
    parser.add_argument("--rollups", action="store_true",
                        help="TimescaleDB: the rollups' bytes too, filled and compressed")
    args = parser.parse_args()
    newest = int((datetime.now(UTC) - timedelta(days=args.days_ago)).timestamp())
    workload = Workload(args.hosts, args.points, newest - newest % STEP_S)
    print(f"{platform.node()}: {workload.total:,} points, {args.hosts} hosts x {len(NINE)}"
          f" metrics, 10 s steps; Python {platform.python_version()}")
    for store in args.stores.split(","):
        for what in args.measure.split(","):
            if what == "query":
                if store == "postgres":
                    measure_query(args.hosts, args.repeat)
            elif store == "sqlite":
                (measure_sqlite_bytes if what == "bytes" else measure_sqlite_migration)(workload)
            elif what == "bytes":
                measure_bytes(workload, store == "timescaledb", args.rollups)
            else:
                measure_migration(workload, store == "timescaledb")


if __name__ == "__main__":
    main()
