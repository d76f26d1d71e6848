"""Server throughput: metric batches per second into gunicorn, and dashboard query latency.

For each store (SQLite, plain PostgreSQL, optionally PostgreSQL with TimescaleDB) it migrates a
fresh database, starts ``python -m gunicorn -w N miniobserv.server.wsgi:app`` on it, and runs
one timed window per (clients, batch size): K sender processes, each one host, POST gzip
batches to ``/api/v1/metrics`` back to back with an ingest token and a ``batch_id``, as the
agent's sender does. A batch of 60 metrics is one 10 s collection of a host with 12 cores, 4
filesystems, 3 disks and 3 interfaces (the agent's collectors); a batch of 1000 is the most
the server takes, consecutive collections of one host (an agent catching up). Timestamps go
back from now in 10 s steps per host. It reports accepted points/s and batches/s, latency
p50/p99 per request, and the CPU used by gunicorn, the database server and the clients.

Then it loads ``--history-hours`` of the same collections for one more host (1000-metric
batches) and times, over HTTP with a read token, the dashboard's query (1 h, 1m buckets, avg,
label core:total) and a 24 h 5m p95 query of that host (raw table; median of
``--query-runs``). At the end of each store the rows in ``metrics`` are counted against the
points the server acknowledged. PostgreSQL runs with its default settings (fsync and
synchronous_commit on); SQLite as the server opens it (WAL, synchronous=FULL).

    python benchmarks/ingest.py [--stores sqlite,postgres,timescaledb] [--workers 4]
                                [--clients 1,4,16] [--sizes 60,1000] [--seconds 20]

The clients run on the same machine as the server and compete with it for CPU. Run by hand,
never as a test. Every server, cluster and temporary directory is removed on exit.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import multiprocessing
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from miniobserv.model import format_time  # noqa: E402
from miniobserv.server.storage import migrate  # noqa: E402
from miniobserv.tokens import mint_token  # noqa: E402
from tests.agent.helpers import SECRET, free_port  # noqa: E402
from tests.conftest import (  # noqa: E402
    ThrowawayCluster,
    find_pg_bindir,
    has_timescaledb_files,
    with_database,
)
from tests.processes import Gunicorn, LoggedProcess  # noqa: E402

STEP = timedelta(seconds=10)
CORES, MOUNTS, DEVICES, IFACES = 12, ("/", "/var", "/home", "/boot"), ("sda", "sdb", "nvme0n1"), \
    ("eth0", "eth1", "docker0")
QUERY_HOST = "query-host"
REQUEST_TIMEOUT_S = 60.0
START_DELAY_S = 1.0  # between submitting a window's senders and their common start


# --- the agent's batches ---------------------------------------------------------------------

def collection(host: str, at: datetime, rand: random.Random) -> list[dict[str, Any]]:
    """One 10 s collection of every collector for a 12-core host, in the wire shape (60)."""
    stamp = format_time(at)

    def metric(name: str, value: float, **labels: str) -> dict[str, Any]:
        out = {"time": stamp, "host": host, "name": name, "value": value}
        return {**out, "labels": labels} if labels else out

    cores = [str(i) for i in range(CORES)] + ["total"]
    out = [metric("cpu.usage_pct", round(rand.uniform(0, 100), 1), core=c) for c in cores]
    out += [metric("mem.used_pct", round(rand.uniform(20, 90), 1)),
            metric("mem.used_bytes", float(rand.randrange(1 << 33, 1 << 35))),
            metric("mem.total_bytes", float(1 << 36)),
            metric("swap.used_pct", round(rand.uniform(0, 5), 1)),
            metric("swap.used_bytes", float(rand.randrange(0, 1 << 28))),
            metric("swap.total_bytes", float(1 << 32))]
    out += [metric(f"load.avg_{m}", round(rand.uniform(0, 8), 2)) for m in ("1m", "5m", "15m")]
    for mount in MOUNTS:
        out += [metric("disk.used_pct", round(rand.uniform(10, 80), 1), mount=mount),
                metric("disk.used_bytes", float(rand.randrange(1 << 30, 1 << 38)), mount=mount),
                metric("disk.total_bytes", float(1 << 39), mount=mount)]
    for device in DEVICES:
        out += [metric(f"disk.{way}_bytes", float(rand.randrange(0, 1 << 26)), device=device)
                for way in ("read", "write")]
    for iface in IFACES:
        out += [metric(f"net.{kind}", float(rand.randrange(0, 1 << 24 if kind.startswith(
            "bytes") else 3)), iface=iface) for kind in ("bytes_in", "bytes_out", "errors_in",
                                                         "errors_out", "drops_in", "drops_out")]
    out += [metric("system.uptime_seconds", float(rand.randrange(1 << 20))),
            metric("system.process_count", float(rand.randrange(150, 400)))]
    return out


COLLECTION_SIZE = len(collection("h", datetime.now(UTC), random.Random(0)))


def batches(host: str, newest: datetime, first: int, size: int) -> Iterator[tuple[list[Any], int]]:
    """Batches of ``size`` metrics from collection ``first`` on, going back in 10 s steps;
    each with the number of collections begun so far (the host's cursor after it)."""
    rand = random.Random(f"{host}/{first}")
    pending: list[dict[str, Any]] = []
    index = first
    while True:
        while len(pending) < size:
            pending += collection(host, newest - index * STEP, rand)
            index += 1
        yield pending[:size], index - first
        pending = pending[size:]


# --- one sender process ----------------------------------------------------------------------

@dataclass
class SenderResult:
    """What one sender saw during a window."""

    latencies: list[float] = field(default_factory=list)  # seconds, accepted requests only
    points: int = 0
    batches: int = 0
    collections: int = 0  # how far the host's cursor moved
    failures: Counter[str] = field(default_factory=Counter)  # status or exception -> count
    samples: list[str] = field(default_factory=list)  # the first failure bodies
    cpu_s: float = 0.0
    finished: float = 0.0  # time.time() of the last answer


def send(url: str, host: str, size: int, newest: datetime, first: int, start_at: float,
         end_at: float, max_collections: int | None = None) -> SenderResult:
    """POST batches back to back from ``start_at`` until ``end_at`` (or ``max_collections``)."""
    token = mint_token(SECRET, scope="ingest")
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip",
               "Authorization": f"Bearer {token}"}
    result = SenderResult()
    with requests.Session() as session:
        time.sleep(max(0.0, start_at - time.time()))
        cpu = time.process_time()
        for metrics, begun in batches(host, newest, first, size):
            if time.time() >= end_at or (max_collections and result.collections
                                         >= max_collections):
                break
            body = {"host": host, "metrics": metrics, "batch_id": str(uuid.uuid4())}
            data = gzip.compress(json.dumps(body, separators=(",", ":")).encode(), 6)
            post_once(session, url, data, headers, len(metrics), result)
            result.collections = begun
        result.cpu_s = time.process_time() - cpu
    result.finished = time.time()
    return result


def ingested_all(response: requests.Response, size: int) -> bool:
    """MiniObserv's acknowledgement of a whole batch."""
    return response.status_code == 202 and response.json().get("ingested") == size


def post_once(session: requests.Session, url: str, data: bytes, headers: dict[str, str],
              size: int, result: SenderResult,
              accepted: Callable[[requests.Response, int], bool] = ingested_all) -> None:
    """One POST, recorded in ``result`` (a success when ``accepted`` says so)."""
    began = time.perf_counter()
    try:
        response = session.post(url, data=data, headers=headers, timeout=REQUEST_TIMEOUT_S)
    except requests.RequestException as err:
        result.failures[type(err).__name__] += 1
        return
    elapsed = time.perf_counter() - began
    if accepted(response, size):
        result.latencies.append(elapsed)
        result.points += size
        result.batches += 1
        return
    result.failures[str(response.status_code)] += 1
    if len(result.samples) < 3:
        result.samples.append(f"{response.status_code} {response.text[:300]}")


def warm(_: int) -> int:
    """A no-op task: makes the pool start its processes before any window."""
    time.sleep(0.3)
    return os.getpid()


# --- CPU per process group ------------------------------------------------------------------

def process_tree(pid: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_snapshot(pids: dict[str, int]) -> dict[str, dict[int, float]]:
    """User+system CPU seconds of every process under each named root pid."""
    out: dict[str, dict[int, float]] = {}
    for group, pid in pids.items():
        out[group] = {}
        for proc in process_tree(pid):
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            out[group][proc.pid] = times.user + times.system
    return out


def machine_busy(before: Any, after: Any) -> dict[str, float]:
    """CPU seconds of the whole machine between two ``psutil.cpu_times()``: busy, iowait."""
    idle = (after.idle - before.idle) + (after.iowait - before.iowait)
    total = sum(after) - sum(before)
    return {"machine": total - idle, "iowait": after.iowait - before.iowait}


def cpu_used(before: dict[str, dict[int, float]],
             after: dict[str, dict[int, float]]) -> dict[str, float]:
    """CPU seconds per group between two snapshots (a process born in between counts whole)."""
    return {group: sum(cpu - before.get(group, {}).get(pid, 0.0) for pid, cpu in procs.items())
            for group, procs in after.items()}


# --- one store -------------------------------------------------------------------------------

@dataclass
class Store:
    """A migrated database: its URL, a description, the root pid of its server (if any)."""

    name: str
    url: str
    version: str
    server_pid: int | None
    count_rows: Callable[[], int]


@contextmanager
def sqlite_store() -> Iterator[Store]:
    root = Path(tempfile.mkdtemp(prefix="miniobserv-bench-"))
    path = root / "miniobserv.db"
    url = f"sqlite:///{path}"
    try:
        migrate.upgrade(url)

        def count() -> int:
            with sqlite3.connect(path) as conn:
                return int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])

        yield Store("sqlite", url, f"SQLite {sqlite3.sqlite_version}", None, count)
    finally:
        shutil.rmtree(root, ignore_errors=True)


class DefaultSettingsCluster(ThrowawayCluster):
    """The test suite's throwaway cluster with PostgreSQL's default durability (fsync on)."""

    def _options(self) -> str:
        test_only = ("-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")
        return " ".join(part for part in _split_options(super()._options())
                        if part not in test_only)


def _split_options(options: str) -> list[str]:
    """``-p 1 -c a=b -k dir`` -> ``["-p 1", "-c a=b", "-k dir"]``."""
    words, parts = options.split(), []
    for flag, value in zip(words[::2], words[1::2], strict=True):
        parts.append(f"{flag} {value}")
    return parts


@contextmanager
def postgres_store(timescaledb: bool) -> Iterator[Store]:
    bindir = find_pg_bindir()
    if bindir is None or (timescaledb and not has_timescaledb_files(bindir)):
        sys.exit("needs a local PostgreSQL 15" + (" with TimescaleDB" if timescaledb else ""))
    cluster = DefaultSettingsCluster(bindir, timescaledb=timescaledb)
    try:
        server = cluster.start()
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
            row = conn.execute("SHOW server_version").fetchone()
        url = with_database(server, "bench")
        migrate.upgrade(url, timescaledb=timescaledb)
        version = f"PostgreSQL {row[0] if row else '?'}"
        if timescaledb:
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT extversion FROM pg_extension"
                                   " WHERE extname = 'timescaledb'").fetchone()
            version += f" + TimescaleDB {row[0] if row else '?'}"
        pid = int((cluster.data / "postmaster.pid").read_text().split()[0])

        def count() -> int:
            """Narrow samples, and those the server packed into blocks (revision 0009)."""
            with psycopg.connect(url) as conn:
                narrow = int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])
                if conn.execute("SELECT to_regclass('sample_blocks')").fetchone()[0] is None:
                    return narrow
                packed = conn.execute("SELECT coalesce(sum(cardinality(times)), 0)"
                                      " FROM sample_blocks").fetchone()[0]
                return narrow + int(packed)

        yield Store("timescaledb" if timescaledb else "postgres", url, version, pid, count)
    finally:
        cluster.destroy()


STORES: dict[str, Callable[[], Any]] = {
    "sqlite": sqlite_store,
    "postgres": lambda: postgres_store(False),
    "timescaledb": lambda: postgres_store(True),
}


class Server(Gunicorn):
    """gunicorn with ``workers`` sync workers (the test suite's ``Gunicorn`` runs 2)."""

    def __init__(self, database_url: str, workers: int, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        LoggedProcess.__init__(
            self, [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b",
                   f"127.0.0.1:{port}", "miniobserv.server.wsgi:app"],
            {"DATABASE_URL": database_url, "AGENT_TOKEN": SECRET, "LOG_LEVEL": "WARNING"})


# --- the measurements --------------------------------------------------------------------------

@dataclass
class Window:
    """One timed window's totals."""

    store: str
    clients: int
    size: int
    seconds: float
    points: int
    batches: int
    p50_ms: float
    p99_ms: float
    failures: Counter[str]
    cpu_cores: dict[str, float]  # group -> cores busy on average

    @property
    def batches_per_s(self) -> float:
        return self.batches / self.seconds

    @property
    def points_per_s(self) -> float:
        return self.points / self.seconds


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) by linear interpolation between the closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class Bench:
    """The windows of one store against one running server."""

    def __init__(self, pool: ProcessPoolExecutor, store: Store, server: Server) -> None:
        self.pool = pool
        self.store = store
        self.server = server
        self.newest = datetime.now(UTC).replace(microsecond=0)
        self.cursors: Counter[str] = Counter()
        self.accepted = 0
        self.pids = {"gunicorn": server.proc.pid, "database": store.server_pid}

    def run(self, hosts: list[str], size: int, seconds: float,
            firsts: list[int] | None = None, limit: int | None = None
            ) -> tuple[list[SenderResult], float, dict[str, float]]:
        """One sender per host; the results, the wall time and CPU seconds per group."""
        start_at = time.time() + START_DELAY_S
        futures = [self.pool.submit(send, self.server.url + "/api/v1/metrics", host, size,
                                    self.newest, firsts[i] if firsts else self.cursors[host],
                                    start_at, start_at + seconds, limit)
                   for i, host in enumerate(hosts)]
        time.sleep(max(0.0, start_at - time.time()))
        pids = {group: pid for group, pid in self.pids.items() if pid is not None}
        before, machine_before = cpu_snapshot(pids), psutil.cpu_times()
        results = [future.result() for future in futures]
        cpu = cpu_used(before, cpu_snapshot(pids))
        cpu.update(machine_busy(machine_before, psutil.cpu_times()))
        cpu["clients"] = sum(result.cpu_s for result in results)
        for host, result in zip(hosts, results, strict=True):
            self.cursors[host] += result.collections
            self.accepted += result.points
        return results, max(result.finished for result in results) - start_at, cpu

    def window(self, clients: int, size: int, seconds: float) -> Window:
        results, elapsed, cpu = self.run([f"bench-{i:02d}" for i in range(clients)], size,
                                         seconds)
        latencies = [s for result in results for s in result.latencies]
        failures: Counter[str] = sum((result.failures for result in results), Counter())
        for sample in (s for result in results for s in result.samples):
            print(f"  failure: {sample}")
        return Window(self.store.name, clients, size, elapsed,
                      sum(r.points for r in results), sum(r.batches for r in results),
                      percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000,
                      failures, {group: s / elapsed for group, s in cpu.items()})

    def load_history(self, hours: float, senders: int = 4) -> tuple[int, float]:
        """``hours`` of collections of QUERY_HOST in 1000-metric batches; points, seconds.

        Each sender takes a range of collections that ends on a batch boundary (50
        collections are 3 batches), so the ranges neither overlap nor leave gaps.
        """
        per = math.ceil(hours * 360 / senders / 50) * 50
        results, elapsed, _ = self.run([QUERY_HOST] * senders, 1000, 3600.0,
                                       firsts=[i * per for i in range(senders)], limit=per)
        failures = sum((result.failures for result in results), Counter())
        if failures:
            print(f"  history load failures: {dict(failures)}")
        return sum(result.points for result in results), elapsed

    def query_ms(self, hours: int, bucket: str, agg: str, runs: int) -> tuple[float, int]:
        """Median latency of GET /api/v1/metrics/query over the last ``hours``; points."""
        params = {"host": QUERY_HOST, "name": "cpu.usage_pct", "label": "core:total",
                  "from": format_time(self.newest - timedelta(hours=hours)),
                  "to": format_time(self.newest), "bucket": bucket, "agg": agg}
        headers = {"Authorization": f"Bearer {mint_token(SECRET, scope='read')}"}
        times, points = [], 0
        with requests.Session() as session:
            for run in range(runs + 1):  # the first is a warm-up
                began = time.perf_counter()
                response = session.get(self.server.url + "/api/v1/metrics/query",
                                       params=params, headers=headers, timeout=60)
                elapsed = time.perf_counter() - began
                response.raise_for_status()
                points = len(response.json()["points"])
                if run:
                    times.append(elapsed * 1000)
        return statistics.median(times), points


# --- output ----------------------------------------------------------------------------------

def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} CPUs, {model}, Python {platform.python_version()}"


HEADER = ("store", "K", "size", "s", "batches/s", "points/s", "p50 ms", "p99 ms", "failed",
          "CPU gunicorn", "CPU db", "CPU clients", "CPU other", "iowait", "agents@10s")


def row(w: Window) -> tuple[str, ...]:
    agents = f"~{w.batches_per_s * 10:.0f}" if w.size == COLLECTION_SIZE else \
        f"(~{w.points_per_s / COLLECTION_SIZE * 10:.0f})"
    return (w.store, str(w.clients), str(w.size), f"{w.seconds:.1f}", f"{w.batches_per_s:.1f}",
            f"{w.points_per_s:.0f}", f"{w.p50_ms:.1f}", f"{w.p99_ms:.1f}",
            str(sum(w.failures.values())), f"{w.cpu_cores.get('gunicorn', 0):.2f}",
            f"{w.cpu_cores.get('database', 0):.2f}", f"{w.cpu_cores.get('clients', 0):.2f}",
            f"{other_cores(w.cpu_cores):.2f}", f"{w.cpu_cores['iowait']:.2f}", agents)


def other_cores(cores: dict[str, float]) -> float:
    """Busy cores of the machine not used by gunicorn, the database or the clients."""
    return cores["machine"] - sum(cores.get(group, 0.0)
                                  for group in ("gunicorn", "database", "clients"))


def print_table(windows: list[Window]) -> None:
    rows = [HEADER, *(row(w) for w in windows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    for r in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(r, widths, strict=True)))


# --- main ------------------------------------------------------------------------------------

def bench_store(pool: ProcessPoolExecutor, name: str, args: argparse.Namespace,
                windows: list[Window]) -> None:
    """Every window, the history load and the queries on one fresh store."""
    with ExitStack() as stack:
        store = stack.enter_context(STORES[name]())
        server = Server(store.url, args.workers, free_port())
        stack.callback(server.terminate)
        server.wait_ready()
        print(f"\n== {name}: {store.version}; gunicorn -w {args.workers}", flush=True)
        bench = Bench(pool, store, server)
        for clients in args.clients:
            for size in args.sizes:
                windows.append(bench.window(clients, size, args.seconds))
                print_table([windows[-1]])
                if windows[-1].failures:
                    print(f"  failures: {dict(windows[-1].failures)}")
        points, seconds = bench.load_history(args.history_hours)
        print(f"history: {points} points of {QUERY_HOST} in {seconds:.1f} s "
              f"({points / seconds:.0f} points/s, 4 senders, 1000-metric batches)")
        for hours, bucket, agg in ((1, "1m", "avg"), (24, "5m", "p95")):
            median, count = bench.query_ms(hours, bucket, agg, args.query_runs)
            print(f"query {hours:>2} h {bucket} {agg} label core:total: median {median:7.1f} ms "
                  f"over {args.query_runs} runs ({count} points)")
        report_server_log(server)
        rows = store.count_rows()
        print(f"rows in metrics: {rows}; points acknowledged: {bench.accepted} "
              f"({'equal' if rows == bench.accepted else 'DIFFERENT'})", flush=True)


def report_server_log(server: Server) -> None:
    """Print gunicorn's warnings and errors (worker timeouts, tracebacks), if any."""
    bad = [line for line in server.lines
           if any(word in line for word in ("ERROR", "CRITICAL", "Traceback", "TIMEOUT"))]
    print(f"gunicorn log: {len(server.lines)} lines, {len(bad)} with errors")
    for line in bad[:10]:
        print(f"  {line}")


def default_stores() -> str:
    """SQLite and PostgreSQL, plus TimescaleDB where its extension files are installed."""
    bindir = find_pg_bindir()
    extra = ",timescaledb" if bindir is not None and has_timescaledb_files(bindir) else ""
    return "sqlite,postgres" + extra


def csv_ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--stores", default=default_stores(),
                        help="comma list of sqlite, postgres, timescaledb (default: each one "
                             "installed here)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--clients", type=csv_ints, default=[1, 4, 16])
    parser.add_argument("--sizes", type=csv_ints, default=[COLLECTION_SIZE, 1000])
    parser.add_argument("--seconds", type=float, default=20.0, help="per window")
    parser.add_argument("--history-hours", type=float, default=24.0)
    parser.add_argument("--query-runs", type=int, default=15)
    args = parser.parse_args()
    args.stores = [name.strip() for name in args.stores.split(",") if name.strip()]
    unknown = set(args.stores) - set(STORES)
    if unknown:
        parser.error(f"unknown store(s): {', '.join(sorted(unknown))}")
    return args


def main() -> None:
    args = parse_args()
    print(f"machine: {machine()}; {COLLECTION_SIZE} metrics per collection")
    windows: list[Window] = []
    context = multiprocessing.get_context("spawn")
    began = time.monotonic()
    with ProcessPoolExecutor(max(max(args.clients), 4), mp_context=context) as pool:
        list(pool.map(warm, range(max(max(args.clients), 4))))
        for name in args.stores:
            bench_store(pool, name, args, windows)
    print(f"\nall windows ({time.monotonic() - began:.0f} s in all):")
    print_table(windows)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # everything was stopped and deleted on the way out
        sys.exit("interrupted")
