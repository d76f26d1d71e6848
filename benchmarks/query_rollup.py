"""A 30-day 1h avg query, raw vs rollup, on TimescaleDB (SPEC §7: month-long queries stay fast).

Starts a throwaway PostgreSQL cluster with TimescaleDB preloaded (the test suite's
``ThrowawayCluster``), migrates a database to head, loads ``--days`` of 10 s points for
``--series`` series of one host and name (labels ``core=0..``, the last ``core=total``),
compresses chunks older than 7 days as the compression policy would, refreshes the rollups,
then times ``--runs`` runs of the same query answered from the raw table and from
``samples_1h`` (both through ``miniobserv.server.storage.postgres``; answers compared), and
prints the medians and their ratio. The cluster is stopped and deleted at the end.

    python benchmarks/query_rollup.py [--days 35] [--series 4] [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fleet_compare import compress_every_chunk  # noqa: E402
from miniobserv.server.storage import migrate  # noqa: E402
from miniobserv.server.storage.base import MetricQuery, Series  # noqa: E402
from miniobserv.server.storage.postgres import PostgresRepositories  # noqa: E402
from miniobserv.server.storage.postgres.metrics import build_query  # noqa: E402
from miniobserv.server.storage.shaping import bucket_floor, to_series  # noqa: E402
from tests.conftest import (  # noqa: E402
    ThrowawayCluster,
    find_pg_bindir,
    has_timescaledb_files,
    with_database,
)

HOST, NAME = "web-01", "cpu.usage_pct"
STEP = timedelta(seconds=10)


def load(url: str, days: int, series: int, now: datetime) -> int:
    """``days`` of 10 s points per series: the series rows, then COPY into ``samples``; the
    number of points."""
    labels = [f'{{"core":"{i}"}}' for i in range(series - 1)] + ['{"core":"total"}']
    start = bucket_floor(now, timedelta(days=1)) - timedelta(days=days)
    points = int((now - start) / STEP)
    with psycopg.connect(url) as conn:
        ids = [conn.execute("INSERT INTO series (host, name, labels_text, labels, first_seen,"
                            " last_seen) VALUES (%s, %s, %s, %s::jsonb, %s, %s) RETURNING id",
                            (HOST, NAME, label, label, start, now)).fetchone()[0]
               for label in labels]
        with conn.cursor().copy("COPY samples (series_id, time, value) FROM STDIN") as copy:
            for i in range(points):
                t = start + i * STEP
                for index, series_id in enumerate(ids):
                    copy.write_row((series_id, t, float((i * 7 + index * 13) % 1000) / 10))
    return points * len(labels)


def prepare(url: str) -> None:
    """Compress chunks past 7 days (the policy's steady state), refresh both rollups."""
    compress_every_chunk(url, "samples", older_than="7 days")
    with psycopg.connect(url, autocommit=True) as conn:
        for view in ("samples_1h", "samples_1d"):
            conn.execute("CALL refresh_continuous_aggregate(%s, NULL, now())", (view,))
        conn.execute("VACUUM ANALYZE")


def median_ms(run: Callable[[], Any], runs: int) -> tuple[float, Any]:
    """The median wall time of ``runs`` calls after one warm-up call; and the last answer."""
    answer = run()
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        answer = run()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), answer


def measure(url: str, now: datetime, runs: int) -> None:
    repos = PostgresRepositories(url, max_size=2).open()
    try:
        query = MetricQuery(HOST, NAME, now - timedelta(days=30), now, "1h", "avg",
                            labels=(("core", "total"),))
        assert repos.metrics.serves_from_rollup(query)

        def raw() -> list[Series]:
            with repos.pool.connection() as conn:
                return to_series(conn.execute(*build_query(query)).fetchall(), None)

        raw_ms, raw_answer = median_ms(raw, runs)
        rollup_ms, rollup_answer = median_ms(lambda: repos.metrics.query(query), runs)
    finally:
        repos.close()
    points = len(rollup_answer[0].points)
    raw_points, rollup_points = raw_answer[0].points, rollup_answer[0].points
    same = [p.time for p in raw_points] == [p.time for p in rollup_points]
    worst = max((abs(a.value - b.value) / max(abs(a.value), 1e-300)
                 for a, b in zip(raw_points, rollup_points, strict=False)), default=0.0)
    print(f"query: 30 days, bucket 1h, agg avg, label core:total -> {points} points "
          f"(same buckets raw and rollup: {same}; largest relative difference {worst:.1e})")
    print(f"raw    median {raw_ms:8.2f} ms over {runs} runs")
    print(f"rollup median {rollup_ms:8.2f} ms over {runs} runs")
    print(f"ratio  raw / rollup = {raw_ms / rollup_ms:.1f}x")


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} CPUs, {model}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--series", type=int, default=4)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    bindir = find_pg_bindir()
    if bindir is None or not has_timescaledb_files(bindir):
        sys.exit("needs a local PostgreSQL with the timescaledb extension files")
    cluster = ThrowawayCluster(bindir, timescaledb=True)
    try:
        server = cluster.start()
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
            version = conn.execute("SELECT version()").fetchone()
        url = with_database(server, "bench")
        migrate.upgrade(url)
        now = datetime.now(UTC)
        began = time.perf_counter()
        rows = load(url, args.days, args.series, now)
        loaded = time.perf_counter()
        prepare(url)
        print(f"machine: {machine()}; {version[0] if version else '?'}")
        print(f"loaded {rows} rows ({args.series} series, {args.days} days of 10 s points) in "
              f"{loaded - began:.0f} s; compress + refresh + analyze "
              f"{time.perf_counter() - loaded:.0f} s")
        measure(url, now, args.runs)
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
