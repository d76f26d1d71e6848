"""Soak: sustained agent-shaped ingest at half the measured capacity, plus queries (issue 11).

Starts a PostgreSQL cluster of its own with PostgreSQL's default durability (TimescaleDB when
installed; ``--no-timescaledb`` without) and gunicorn with the shipped config
(``-c python:miniobserv.server.gunicorn_conf``) on it, then:

1. capacity: ``--senders`` threads (default 4) POST 60-point gzip batches (one 10 s collection
   of a 12-core host, as ``benchmarks/ingest.py`` makes them, each with a ``batch_id``) back
   to back for ``--capacity-seconds`` (20); acknowledged batches per second is the capacity;
2. soak: for ``--minutes`` (10) the same senders are paced to half of it (each batch has its
   due time; a sender that fell behind sends at once until it is on schedule again), each
   cycling through ``--hosts-per-sender`` hosts (25) with the time of sending; a reader asks,
   every second, ``/api/v1/metrics/query`` (last 1 h, 1m buckets, ``label=core:total``),
   ``/api/v1/logs/query`` (last 15 min) and ``/api/v1/metrics/latest``.

It reports errors (any answer other than 202 to a batch or 200 to a query, and every
exception), the gunicorn workers' RSS (sum) at the start and the end of the soak, and per
minute the ingest answers with their p50/p99 and the query answers with their p99 (also per
endpoint); at the end the rows in ``metrics`` against the points acknowledged. Exit status 0 when there were no
errors and the workers' RSS at the end is within 10 % of the start.

    python benchmarks/soak.py                 # the 10-minute soak
    python benchmarks/soak.py --minutes 2     # a short one

Run by hand, never as a test. Every process, cluster and temporary directory is removed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.ingest import COLLECTION_SIZE, collection, percentile  # noqa: E402
from miniobserv.model import format_time  # noqa: E402
from miniobserv.tokens import mint_token  # noqa: E402
from tests.agent.helpers import SECRET, free_port  # noqa: E402
from tests.integration.faultkit import durable_database  # noqa: E402
from tests.processes import CONFIG_ARGS, Gunicorn  # noqa: E402

REQUEST_TIMEOUT_S = 30.0
RSS_TOLERANCE = 0.10


@dataclass
class Stats:
    """Answers of one kind, per minute of the soak: latencies (s), errors."""

    latencies: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, minute: int, seconds: float) -> None:
        with self.lock:
            self.latencies[minute].append(seconds)

    def error(self, what: str, sample: str = "") -> None:
        with self.lock:
            self.errors[what] += 1
            if sample and len(self.samples) < 5:
                self.samples.append(sample)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.latencies.values())


class Ingest(threading.Thread):
    """One sender: agent-shaped batches, back to back or paced to ``rate`` batches/s."""

    def __init__(self, url: str, index: int, hosts: int, stats: Stats, began: float,
                 end: float, rate: float | None) -> None:
        super().__init__(daemon=True)
        self.url = url + "/api/v1/metrics"
        self.hosts = [f"soak-{index:02d}-{h:03d}" for h in range(hosts)]
        self.stats, self.began, self.end, self.rate = stats, began, end, rate
        self.rand = random.Random(index)
        self.acknowledged_points = 0

    def run(self) -> None:
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip",
                   "Authorization": f"Bearer {mint_token(SECRET, scope='ingest')}"}
        sent = 0
        with requests.Session() as session:
            while True:
                if self.rate is not None:  # paced: batch `sent` is due at began + sent/rate
                    due = self.began + sent / self.rate
                    time.sleep(max(0.0, due - time.monotonic()))
                if time.monotonic() >= self.end:
                    return
                host = self.hosts[sent % len(self.hosts)]
                metrics = collection(host, datetime.now(UTC), self.rand)
                body = {"host": host, "metrics": metrics, "batch_id": str(uuid.uuid4())}
                data = gzip.compress(json.dumps(body, separators=(",", ":")).encode(), 6)
                sent += 1
                self.post(session, data, headers, len(metrics))

    def post(self, session: requests.Session, data: bytes, headers: dict[str, str],
             size: int) -> None:
        minute = int((time.monotonic() - self.began) // 60)
        began = time.perf_counter()
        try:
            response = session.post(self.url, data=data, headers=headers,
                                    timeout=REQUEST_TIMEOUT_S)
        except requests.RequestException as err:
            self.stats.error(type(err).__name__, str(err)[:200])
            return
        if response.status_code == 202 and response.json().get("ingested") == size:
            self.stats.ok(minute, time.perf_counter() - began)
            self.acknowledged_points += size
        else:
            self.stats.error(str(response.status_code),
                             f"{response.status_code} {response.text[:200]}")


class Reader(threading.Thread):
    """Every second: the dashboard's metric query, a log query and the newest values."""

    def __init__(self, url: str, host: str, stats: Stats, began: float, end: float) -> None:
        super().__init__(daemon=True)
        self.url, self.host, self.stats, self.began, self.end = url, host, stats, began, end
        # path -> minute -> latencies (s): which query is slow
        self.by_path: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))

    def requests_now(self) -> list[tuple[str, dict[str, str]]]:
        now = datetime.now(UTC)
        return [
            ("/api/v1/metrics/query", {
                "host": self.host, "name": "cpu.usage_pct", "label": "core:total",
                "bucket": "1m", "agg": "avg", "from": format_time(now - timedelta(hours=1)),
                "to": format_time(now)}),
            ("/api/v1/logs/query", {"from": format_time(now - timedelta(minutes=15)),
                                    "to": format_time(now)}),
            ("/api/v1/metrics/latest", {"name": "cpu.usage_pct", "label": "core:total"}),
        ]

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {mint_token(SECRET, scope='read')}"}
        tick = 0
        with requests.Session() as session:
            while True:
                time.sleep(max(0.0, self.began + tick - time.monotonic()))
                tick += 1
                if time.monotonic() >= self.end:
                    return
                for path, params in self.requests_now():
                    minute = int((time.monotonic() - self.began) // 60)
                    began = time.perf_counter()
                    try:
                        response = session.get(self.url + path, params=params,
                                               headers=headers, timeout=REQUEST_TIMEOUT_S)
                    except requests.RequestException as err:
                        self.stats.error(type(err).__name__, str(err)[:200])
                        continue
                    if response.status_code == 200:
                        self.stats.ok(minute, time.perf_counter() - began)
                        self.by_path[path][minute].append(time.perf_counter() - began)
                    else:
                        self.stats.error(f"{path} {response.status_code}",
                                         f"{path} {response.status_code} {response.text[:200]}")


def workers_rss_mb(master_pid: int) -> float:
    """The summed VmRSS of gunicorn's worker processes (the master's children)."""
    total = 0
    for child in psutil.Process(master_pid).children():
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / (1 << 20)


def run_senders(url: str, args: argparse.Namespace, seconds: float, rate: float | None,
                ingest: Stats) -> tuple[list[Ingest], float]:
    began = time.monotonic()
    per_sender = None if rate is None else rate / args.senders
    senders = [Ingest(url, i, args.hosts_per_sender, ingest, began, began + seconds,
                      per_sender) for i in range(args.senders)]
    for sender in senders:
        sender.start()
    return senders, began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--hosts-per-sender", type=int, default=25)
    parser.add_argument("--capacity-seconds", type=float, default=20.0)
    parser.add_argument("--no-timescaledb", action="store_true")
    args = parser.parse_args()
    with durable_database("soak", not args.no_timescaledb) as database:
        server = Gunicorn(database.url, port=free_port(), args=CONFIG_ARGS,
                          env={"LOG_LEVEL": "WARNING"})
        try:
            server.wait_ready()
            print(f"store: {database.version} (default durability); gunicorn with the shipped"
                  f" config; {os.cpu_count()} CPUs; {COLLECTION_SIZE}-point batches; "
                  f"{args.senders} senders", flush=True)
            return soak(args, server, database.url)
        finally:
            server.terminate()


def soak(args: argparse.Namespace, server: Gunicorn, database_url: str) -> int:
    capacity_stats = Stats()
    senders, began = run_senders(server.url, args, args.capacity_seconds, None, capacity_stats)
    for sender in senders:
        sender.join()
    capacity = capacity_stats.count / (time.monotonic() - began)
    acknowledged_points = sum(s.acknowledged_points for s in senders)
    target = capacity / 2
    print(f"capacity ({args.capacity_seconds:g} s, back to back): {capacity:.1f} batches/s "
          f"({capacity * COLLECTION_SIZE:.0f} points/s); errors {dict(capacity_stats.errors)}")
    print(f"soak: {args.minutes:g} min at {target:.1f} batches/s, plus queries every second",
          flush=True)

    ingest, queries = Stats(), Stats()
    seconds = args.minutes * 60
    rss_start = workers_rss_mb(server.proc.pid)
    senders, began = run_senders(server.url, args, seconds, target, ingest)
    reader = Reader(server.url, senders[0].hosts[0], queries, began, began + seconds)
    reader.start()
    for minute in range(int(-(-seconds // 60))):
        time.sleep(max(0.0, began + min(seconds, (minute + 1) * 60) - time.monotonic()))
        print(f"  minute {minute + 1}: {len(ingest.latencies[minute])} ingest answers, "
              f"{len(queries.latencies[minute])} query answers, errors "
              f"{sum(ingest.errors.values()) + sum(queries.errors.values())}", flush=True)
    for thread in [*senders, reader]:
        thread.join(REQUEST_TIMEOUT_S + 5)
    rss_end = workers_rss_mb(server.proc.pid)
    acknowledged_points += sum(s.acknowledged_points for s in senders)

    errors = sum(ingest.errors.values()) + sum(queries.errors.values())
    growth = (rss_end - rss_start) / rss_start
    print(f"\nbatches acknowledged in the soak: {ingest.count} "
          f"({ingest.count / seconds:.1f}/s; target {target:.1f}/s)")
    print(f"errors: {errors} {dict(ingest.errors + queries.errors)}")
    for sample in ingest.samples + queries.samples:
        print(f"  {sample}")
    print(f"gunicorn workers' RSS, sum: {rss_start:.1f} MB at the start -> {rss_end:.1f} MB at "
          f"the end ({growth * 100:+.1f} %)")
    print("\n| minute | ingest answers | ingest p50 ms | ingest p99 ms | query answers |"
          " query p99 ms |\n|---|---|---|---|---|---|")
    for minute in sorted(set(ingest.latencies) | set(queries.latencies)):
        got, asked = ingest.latencies[minute], queries.latencies[minute]
        print(f"| {minute + 1} | {len(got)} | {percentile(got, 0.5) * 1000:.0f} | "
              f"{percentile(got, 0.99) * 1000:.0f} | {len(asked)} | "
              f"{percentile(asked, 0.99) * 1000:.0f} |")
    print("\nquery p99 ms per endpoint and minute:")
    for path, minutes in sorted(reader.by_path.items()):
        print(f"  {path}: " + " ".join(f"{percentile(minutes[m], 0.99) * 1000:.0f}"
                                       for m in sorted(minutes)))
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM samples").fetchone()
    rows = int(row[0]) if row else 0
    print(f"\nrows in samples: {rows}; points acknowledged: {acknowledged_points} "
          f"({'equal' if rows == acknowledged_points else 'DIFFERENT'})")
    ok = errors == 0 and abs(growth) <= RSS_TOLERANCE and rows == acknowledged_points
    print("result:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
