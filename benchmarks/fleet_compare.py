"""Fleet workload side by side: MiniObserv against InfluxDB 1.6 and VictoriaMetrics (issue 10).

One run, one machine, the same points for every system. ``--hosts`` hosts each report the nine
original metrics (cpu.usage_pct{core=total}, mem.used_pct/used_bytes/total_bytes,
disk.used_pct/used_bytes/total_bytes{mount=/}, net.bytes_in/out{iface=eth0}) at 10 s steps
ending now; ``--points`` in all (``--points // --hosts`` per host), cut into 1000-point batches
of one host each (MiniObserv's batches carry one host), sent in fleet order (every host's first
batch, then every host's second ...) by 4 client processes over ``requests`` sessions. Batches
are made lazily in the clients from their index, so memory stays flat at any size.

Systems, one at a time on 127.0.0.1 with a free port and data in a temp dir:

- MiniObserv on each store (SQLite; PostgreSQL with default durability, fsync on; TimescaleDB
  when its extension is installed), behind the README's ``gunicorn -w 4`` (with
  ``-c python:miniobserv.server.gunicorn_conf`` when that file exists). Gzip JSON batches
  with an ingest token and a ``batch_id``, as the agent sends them.
- ``influxd`` (Debian's ``influxdb``) with a generated config file; gzip line protocol to
  ``/write?precision=s``. ``victoria-metrics`` with ``-retentionPeriod 100y``; gzip Prometheus
  text with millisecond timestamps to ``/api/v1/import/prometheus`` (dots in names become
  underscores). A peer whose binary is absent is skipped with a note.

Per system: ingest points/s and p50/p99 request latency; bytes on disk per point stored;
over HTTP the median of ``--query-runs`` runs (after one warm-up) of one series' last 24 h in
1 m buckets (avg) and of the latest value of every host for one metric; the RSS of gunicorn's
workers (or the peer) before and after the load. Then, for MiniObserv, the agent-shaped load
of ``benchmarks/ingest.py`` (40-metric batches, 16 clients, ``--agent-seconds``). Every loop is
bounded (``--max-seconds`` per load, ``--settle-seconds`` per storage wait) and every process,
cluster and directory started here is stopped or removed on exit, also on Ctrl-C.

    python benchmarks/fleet_compare.py [--points 1000000] [--hosts 1000]
                                       [--systems sqlite,postgres,influxdb,victoriametrics]
                                       [--write BENCHMARKS.md]

The issue's larger workload is ``--points 10000000`` (same command, about ten times the
load). ``--write`` replaces the text between the fleet-compare markers in that file (appending the
section if they are absent). Run by hand, never as a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import math
import multiprocessing
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.ingest import (  # noqa: E402
    STORES,
    Bench,
    SenderResult,
    Server,
    Store,
    Window,
    cpu_snapshot,
    cpu_used,
    ingested_all,
    machine,
    machine_busy,
    percentile,
    post_once,
    warm,
)
from miniobserv.model import format_time  # noqa: E402
from miniobserv.tokens import mint_token  # noqa: E402
from tests.agent.helpers import SECRET, free_port  # noqa: E402
from tests.conftest import find_pg_bindir, has_timescaledb_files  # noqa: E402
from tests.processes import START_TIMEOUT_S, LoggedProcess  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- fleet-compare:begin -->", "<!-- fleet-compare:end -->"
STEP_S = 10
BATCH = 1000
CLIENTS = 4
WORKERS = 4
AGENT_BATCH, AGENT_CLIENTS = 40, 16
REQUEST_TIMEOUT_S = 60.0
QUERY_HOURS = 24
LATEST_WINDOW_S = 300
MINIOBSERV = ("sqlite", "postgres", "timescaledb")
PEERS = ("influxdb", "victoriametrics")
# Today's figures (storage of 0133075; the 1 M run in BENCHMARKS.md at d5f04cd, PostgreSQL) for
# the "N x today's rate" targets: a run on the new storage compares against these.
# Set them to 0.0 to make a run its own baseline.
TODAY_PG_POINTS_PER_S = 50_448.0
TODAY_AGENT_BATCHES_PER_S = 154.6

# name, labels, how the value moves: (kind, a, b); see ``step_values``.
NINE: tuple[tuple[str, dict[str, str]], ...] = (
    ("cpu.usage_pct", {"core": "total"}),
    ("mem.used_pct", {}),
    ("mem.used_bytes", {}),
    ("mem.total_bytes", {}),
    ("disk.used_pct", {"mount": "/"}),
    ("disk.used_bytes", {"mount": "/"}),
    ("disk.total_bytes", {"mount": "/"}),
    ("net.bytes_in", {"iface": "eth0"}),
    ("net.bytes_out", {"iface": "eth0"}),
)
MEM_TOTAL, DISK_TOTAL = float(1 << 36), float(1 << 39)


# --- the workload ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Workload:
    """``hosts`` x nine metrics at 10 s steps ending at ``newest``, ``points`` in all."""

    hosts: int
    points: int
    newest: int  # epoch seconds, a multiple of STEP_S
    batch: int = BATCH

    @property
    def per_host(self) -> int:
        return self.points // self.hosts

    @property
    def steps(self) -> int:
        return math.ceil(self.per_host / len(NINE))

    @property
    def batches_per_host(self) -> int:
        return math.ceil(self.per_host / self.batch)

    @property
    def batches(self) -> int:
        return self.hosts * self.batches_per_host

    @property
    def total(self) -> int:
        return self.hosts * self.per_host

    @property
    def oldest(self) -> int:
        return self.newest - (self.steps - 1) * STEP_S

    def host(self, index: int) -> str:
        return f"host-{index:05d}"

    def points_of(self, batch: int) -> tuple[str, list[tuple[int, int, float]]]:
        """Batch ``batch``'s host and its points ``(time, metric index, value)``, oldest first.

        Batch b is chunk ``b // hosts`` of host ``b % hosts``: the fleet moves forward in time
        together. The values depend only on (host, step), never on the batch size."""
        host, chunk = batch % self.hosts, batch // self.hosts
        first = chunk * self.batch
        last = min(first + self.batch, self.per_host)
        out: list[tuple[int, int, float]] = []
        for step in range(first // len(NINE), math.ceil(last / len(NINE))):
            values = step_values(host, step)
            at = self.oldest + step * STEP_S
            for metric in range(len(NINE)):
                if first <= step * len(NINE) + metric < last:
                    out.append((at, metric, values[metric]))
        return self.host(host), out


def step_values(host: int, step: int) -> list[float]:
    """The nine values of one host at one step: slow waves plus noise, constants, counters of
    bytes per interval; roughly what a real fleet reports (not white noise, not constant)."""
    rand = random.Random(host * 1_000_003 + step)
    phase = host % 97 / 97 * 2 * math.pi
    cpu = min(100.0, max(0.0, 40 + 30 * math.sin(phase + step / 30) + rand.uniform(-5, 5)))
    mem = 50 + 20 * math.sin(phase + step / 720) + rand.uniform(-0.5, 0.5)
    disk = 30 + (host % 50) + step / 8640
    return [round(cpu, 1), round(mem, 1), float(int(MEM_TOTAL * mem / 100) // 4096 * 4096),
            MEM_TOTAL, round(disk, 1), float(int(DISK_TOTAL * disk / 100) // 4096 * 4096),
            DISK_TOTAL, float(rand.randrange(1 << 20)), float(rand.randrange(1 << 18))]


# --- wire formats ----------------------------------------------------------------------------

def miniobserv_body(host: str, points: list[tuple[int, int, float]]) -> bytes:
    """The agent's JSON batch, gzip-compressed."""
    stamps: dict[int, str] = {}
    metrics = []
    for at, metric, value in points:
        stamp = stamps.get(at) or stamps.setdefault(at, format_time(datetime.fromtimestamp(at,
                                                                                           UTC)))
        name, labels = NINE[metric]
        metrics.append({"time": stamp, "host": host, "name": name, "value": value,
                        **({"labels": labels} if labels else {})})
    body = {"host": host, "metrics": metrics, "batch_id": str(uuid.uuid4())}
    return gzip.compress(json.dumps(body, separators=(",", ":")).encode(), 6)


def influx_line(host: str, at: int, metric: int, value: float) -> str:
    """InfluxDB line protocol, seconds: measurement = metric name, tags host + labels."""
    name, labels = NINE[metric]
    tags = "".join(f",{key}={val}" for key, val in sorted(labels.items()))
    return f"{name},host={host}{tags} value={value!r} {at}"


def prometheus_line(host: str, at: int, metric: int, value: float) -> str:
    """Prometheus text with millisecond timestamps (``.`` in names becomes ``_``)."""
    name, labels = NINE[metric]
    tags = "".join(f',{key}="{val}"' for key, val in sorted(labels.items()))
    return f'{prom_name(name)}{{host="{host}"{tags}}} {value!r} {at * 1000}'


def lines_body(line: Callable[[str, int, int, float], str]
               ) -> Callable[[str, list[tuple[int, int, float]]], bytes]:
    """A text format's batch: one ``line`` per point, gzip-compressed."""
    def encode(host: str, points: list[tuple[int, int, float]]) -> bytes:
        return gzip.compress("\n".join(line(host, *point) for point in points).encode(), 6)

    return encode


def prom_name(name: str) -> str:
    return name.replace(".", "_")


ENCODERS: dict[str, Callable[[str, list[tuple[int, int, float]]], bytes]] = {
    "miniobserv": miniobserv_body, "influxdb": lines_body(influx_line),
    "victoriametrics": lines_body(prometheus_line)}


@dataclass(frozen=True)
class Sink:
    """Where and how a client posts: the encoder's name, URL, headers, accepted status."""

    encoder: str
    url: str
    headers: dict[str, str]
    status: int  # a peer's answer to a batch it stored

    def accepted(self, response: requests.Response, size: int) -> bool:
        if self.encoder == "miniobserv":
            return ingested_all(response, size)
        return response.status_code == self.status


def send_share(sink: Sink, workload: Workload, client: int, clients: int, ready: Any,
               max_seconds: float) -> SenderResult:
    """Encode batches ``client``, ``client + clients``, ... first (as TSBS pre-generates its
    load), wait at ``ready`` (a barrier the parent passes too), then POST them back to back
    until done or ``max_seconds`` passed; the latency of each request. Encoding is neither in
    the timed window nor in the clients' CPU, so the clients take little of the machine."""
    result = SenderResult()
    encode = ENCODERS[sink.encoder]
    bodies = []
    for batch in range(client, workload.batches, clients):
        host, points = workload.points_of(batch)
        bodies.append((encode(host, points), len(points)))
    with requests.Session() as session:
        ready.wait()
        deadline = time.time() + max_seconds
        cpu = time.process_time()
        for body, size in bodies:
            if time.time() >= deadline:
                break
            post_once(session, sink.url, body, sink.headers, size, result, sink.accepted)
        result.cpu_s = time.process_time() - cpu
    result.finished = time.time()
    return result


# --- the systems -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    """One timed HTTP GET and how to count the answer's entries."""

    url: str
    params: dict[str, str]
    headers: dict[str, str]
    count: Callable[[Any], int]


@dataclass
class System:
    """A running system under test: how to feed it, measure it and query it."""

    name: str
    version: str
    sink: Sink
    root_pid: int
    disk_bytes: Callable[[], int]  # after flushing what it buffers
    stored: Callable[[], int]  # points it holds
    series_query: Query
    latest_query: Query | None  # None: no such API
    worker_pids: Callable[[], list[int]]
    fixed_bytes: Callable[[], int] = lambda: 0  # of disk_bytes: preallocated, not per point
    # TimescaleDB: every chunk compressed; plain PostgreSQL: every window packed
    compressed_bytes: Callable[[], int] | None = None


@dataclass
class Figures:
    """What one system measured."""

    name: str
    version: str
    points: int = 0
    seconds: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    failures: Counter[str] = field(default_factory=Counter)
    complete: bool = True
    stored: int = 0
    disk_bytes: int = 0
    series_ms: float = math.nan
    series_n: int = 0
    latest_ms: float | None = None
    latest_n: int = 0
    fixed_bytes: int = 0
    compressed_bytes: int = 0  # every chunk compressed (TimescaleDB), window packed (PG), or 0
    series_packed_ms: float = math.nan  # the one-series query after that
    rss_start: dict[int, int] = field(default_factory=dict)  # pid -> bytes, before the load
    rss_warm: dict[int, int] = field(default_factory=dict)  # once 10 % of the load's time passed
    rss_end: dict[int, int] = field(default_factory=dict)
    cpu_cores: dict[str, float] = field(default_factory=dict)
    agent: Window | None = None

    @property
    def points_per_s(self) -> float:
        return self.points / self.seconds

    @property
    def bytes_per_point(self) -> float:
        return self.disk_bytes / self.stored if self.stored else math.nan

    @property
    def compressed_per_point(self) -> float:
        return self.compressed_bytes / self.stored if self.stored and self.compressed_bytes \
            else math.nan

    @property
    def rss_growth(self) -> float:
        """The largest growth of one process's RSS from the warm sample to the end."""
        return max((self.rss_end.get(pid, 0) / size - 1 for pid, size in self.rss_warm.items()),
                   default=math.nan)


def read_token() -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, scope='read')}"}


class FleetServer(Server):
    """The README's gunicorn command with 4 workers (and the config file when there is one)."""

    def __init__(self, database_url: str, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        LoggedProcess.__init__(self, [sys.executable, "-m", "gunicorn", *gunicorn_options(),
                                      "-b", f"127.0.0.1:{port}", "miniobserv.server.wsgi:app"],
                               {"DATABASE_URL": database_url, "AGENT_TOKEN": SECRET,
                                "LOG_LEVEL": "WARNING"}, cwd=ROOT)

    def wait_ready(self) -> None:
        """Ready once one worker answers and all ``WORKERS`` are forked (the RSS before the
        load is then the sum of every worker: it once missed those still booting)."""
        super().wait_ready()
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(children(self.proc.pid)) < WORKERS and time.monotonic() < deadline:
            time.sleep(0.1)


def gunicorn_options() -> list[str]:
    if (ROOT / "miniobserv" / "server" / "gunicorn_conf.py").exists():
        return ["-c", "python:miniobserv.server.gunicorn_conf", "-w", str(WORKERS)]
    return ["-w", str(WORKERS)]


def children(pid: int) -> list[int]:
    try:
        return [proc.pid for proc in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


@contextmanager
def miniobserv(store_name: str, workload: Workload, stack: ExitStack
               ) -> Iterator[tuple[System, Store, FleetServer]]:
    """A fresh store (ingest.py's), gunicorn on it, and how to measure both."""
    store = stack.enter_context(STORES[store_name]())
    server = FleetServer(store.url, free_port())
    stack.callback(server.terminate)
    server.wait_ready()
    token = mint_token(SECRET, scope="ingest")
    sink = Sink("miniobserv", server.url + "/api/v1/metrics",
                {"Content-Type": "application/json", "Content-Encoding": "gzip",
                 "Authorization": f"Bearer {token}"}, 202)
    start, end = span(workload)
    series = Query(server.url + "/api/v1/metrics/query",
                   {"host": workload.host(0), "name": "cpu.usage_pct", "label": "core:total",
                    "from": format_time(start), "to": format_time(end), "bucket": "1m",
                    "agg": "avg"}, read_token(), lambda answer: len(answer["points"]))
    latest = Query(server.url + "/api/v1/metrics/latest",
                   {"name": "cpu.usage_pct", "label": "core:total"}, read_token(), count_entries)
    found = requests.get(latest.url, params=latest.params, headers=latest.headers,
                         timeout=REQUEST_TIMEOUT_S).status_code != 404
    disk = (lambda: sqlite_bytes(store.url)) if store_name == "sqlite" else \
        (lambda: postgres_bytes(store.url, store_name == "timescaledb"))
    compressed = (lambda: postgres_bytes(store.url, True, compress=True)) \
        if store_name == "timescaledb" else (lambda: packed_bytes(store.url)) \
        if store_name == "postgres" else None
    yield (System(store.name, store.version, sink, server.proc.pid, disk, store.count_rows,
                  series, latest if found else None, lambda: children(server.proc.pid),
                  compressed_bytes=compressed), store, server)


def span(workload: Workload) -> tuple[datetime, datetime]:
    """The queries' range: the last 24 h up to one minute after the newest point."""
    end = datetime.fromtimestamp(workload.newest + 60, UTC)
    return end - timedelta(hours=QUERY_HOURS), end


def count_entries(answer: Any) -> int:
    """Entries of an answer whose shape is not known here: the longest list in it."""
    if isinstance(answer, list):
        return len(answer)
    lists = [len(value) for value in answer.values() if isinstance(value, list)]
    return max(lists, default=0)


# today's table, issue 10's two, and plain PostgreSQL's packed samples (revision 0009)
DATA_TABLES = ("metrics", "series", "samples", "sample_blocks")
# 0010's job that compresses samples (batches of up to a day, LZ4-packed), if the database has it.
_SAMPLES_JOB = "SELECT config FROM timescaledb_information.jobs WHERE proc_name = 'compress_samples'"


def compress_every_chunk(url: str, table: str, older_than: str = "-36500 days") -> None:
    """What compression does to ``table``'s chunks after 7 days, now to the chunks older
    than ``older_than`` (by default every chunk, even future ones): for ``samples`` by the
    job of migration 0010 when there is one (its batch size, its packing), else (and for
    other hypertables) by ``compress_chunk``."""
    with psycopg.connect(url, autocommit=True) as conn:  # the job commits after each chunk
        job = conn.execute(_SAMPLES_JOB).fetchone() if table == "samples" else None
        if job is not None:
            config = {**job[0], "compress_after": older_than}
            conn.execute("CALL compress_samples(NULL, %s::jsonb)", (json.dumps(config),))
        else:
            conn.execute("SELECT count(compress_chunk(c, if_not_compressed => true))"
                         " FROM show_chunks(%s::regclass, older_than => %s::interval) AS c",
                         (table, older_than))


def postgres_bytes(url: str, timescaledb: bool, compress: bool = False) -> int:
    """Tables, indexes and TOAST of the metric tables (hypertable_size on TimescaleDB; with
    ``compress``, after compressing every chunk of the hypertables first)."""
    total = 0
    with psycopg.connect(url) as conn:
        for table in DATA_TABLES:
            row = conn.execute("SELECT to_regclass(%s)::text", (table,)).fetchone()
            if not row or row[0] is None:
                continue
            hyper = timescaledb and conn.execute(
                "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = %s",
                (table,)).fetchone()
            if hyper and compress:  # what the compression policy does to chunks after 7 days
                conn.commit()
                compress_every_chunk(url, table)
            size = "hypertable_size(%s::regclass)" if hyper else \
                "pg_total_relation_size(%s::regclass)"
            row = conn.execute(f"SELECT {size}", (table,)).fetchone()  # one of two fixed texts
            total += int(row[0] if row else 0)
    return total


def packed_bytes(url: str) -> int:
    """Plain PostgreSQL after the maintenance job packed every window (what it does to the
    samples older than METRICS_PACK_AFTER), then VACUUM and REINDEX of the narrow table: the
    pages its packed rows leave are reused by the next narrow rows in a running server, so
    they are not counted (``benchmarks/samples_storage.py`` reports them too)."""
    from miniobserv.server.storage.postgres import blocks

    with psycopg.connect(url, autocommit=True) as conn:
        if not blocks.uses_blocks(conn):
            return 0
        before = datetime.now(UTC) + timedelta(hours=1)
        deadline = time.monotonic() + 600
        # pack() stops at once while the server's maintenance job packs (it holds the lock):
        # call it again until no narrow row is left before the horizon (a run of 10 M points
        # measured 65 B/point when it stopped early).
        while conn.execute("SELECT EXISTS (SELECT 1 FROM samples WHERE time < %s)",
                           (blocks.pack_horizon(before),)).fetchone()[0]:
            if time.monotonic() > deadline:
                raise RuntimeError("samples still unpacked after 600 s")
            if not blocks.pack(conn, before, lambda: False):
                time.sleep(1)
        conn.execute("VACUUM ANALYZE samples")
        conn.execute("REINDEX TABLE samples")
        conn.execute("VACUUM ANALYZE sample_blocks")
    return postgres_bytes(url, False)


def sqlite_bytes(url: str) -> int:
    """The database file and its WAL after a checkpoint."""
    path = Path(url.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def tree_bytes(*roots: Path) -> int:
    """Apparent size of every file under ``roots`` (``du -b``)."""
    total = 0
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for name in files:
                try:
                    total += (Path(dirpath) / name).stat().st_size
                except FileNotFoundError:  # a part merged away meanwhile
                    continue
    return total


def settle(measure: Callable[[], int], timeout: float, least: float = 0.0,
           poll: float = 2.0, still: int = 3) -> int:
    """``measure()`` once it returned the same value ``still`` polls in a row (after at least
    ``least`` seconds), or its last value after ``timeout``."""
    began = time.monotonic()
    last, same = -1, 0
    while time.monotonic() - began < timeout:
        value = measure()
        same = same + 1 if value == last else 0
        last = value
        if same >= still and time.monotonic() - began >= least:
            break
        time.sleep(poll)
    return last


class Peer(LoggedProcess):
    """A peer's daemon: started on loopback, ready when ``ready_path`` answers, stopped by PID."""

    def __init__(self, args: list[str], url: str, ready_path: str, ready_status: int) -> None:
        self.url = url
        super().__init__(args, {})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if requests.get(url + ready_path, timeout=2).status_code == ready_status:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.terminate()
        raise RuntimeError(f"{args[0]} did not become ready:\n{self.output[-2000:]}")


INFLUX_CONF = """reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{root}/meta"
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "5s"
  compact-full-write-cold-duration = "10s"
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:{http}"
  log-enabled = false
[continuous_queries]
  enabled = false
"""


def version_of(binary: str, *args: str) -> str:
    """The first line ``binary args`` prints, else the Debian package's version."""
    out = subprocess.run([binary, *args], capture_output=True, text=True, timeout=30)
    line = (out.stdout or out.stderr).strip().splitlines()
    if line:
        return line[0]
    package = {"influxd": "influxdb"}.get(binary, binary)
    deb = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True,
                         text=True, timeout=30).stdout.strip()
    return f"{binary} (Debian package {package} {deb or '?'}; -version prints nothing)"


@contextmanager
def influxdb(workload: Workload, stack: ExitStack, settle_s: float) -> Iterator[System]:
    root = Path(tempfile.mkdtemp(prefix="fleet-influx-"))
    stack.callback(shutil.rmtree, root, ignore_errors=True)
    port = free_port()
    (root / "influxdb.conf").write_text(INFLUX_CONF.format(root=root, rpc=free_port(),
                                                           http=port))
    peer = Peer(["influxd", "run", "-config", str(root / "influxdb.conf")],
                f"http://127.0.0.1:{port}", "/ping", 204)
    stack.callback(peer.terminate)
    influxql(peer.url, "CREATE DATABASE bench", post_it=True)
    start, end = span(workload)
    window = f"time >= {int(start.timestamp())}s AND time < {int(end.timestamp())}s"
    series = Query(peer.url + "/query", {"db": "bench", "epoch": "ms", "q": (
        f"SELECT mean(value) FROM \"cpu.usage_pct\" WHERE host = '{workload.host(0)}' AND "
        f"core = 'total' AND {window} GROUP BY time(1m) fill(none)")}, {}, influx_rows)
    latest = Query(peer.url + "/query", {"db": "bench", "epoch": "ms", "q": (
        "SELECT last(value) FROM \"cpu.usage_pct\" WHERE core = 'total' AND "
        f"time > {workload.newest - LATEST_WINDOW_S}s GROUP BY host")}, {}, influx_series)

    def stored() -> int:
        answer = influxql(peer.url, "SELECT count(value) FROM /.*/")
        return sum(int(s["values"][0][1]) for r in answer["results"] for s in r.get("series", []))

    def disk() -> int:  # TSM files once the cache is snapshotted and compacted (cold 5 s/10 s)
        return settle(lambda: tree_bytes(root / "data", root / "wal"), settle_s, least=20)

    yield System("influxdb", version_of("influxd", "version"),
                 Sink("influxdb", peer.url + "/write?db=bench&precision=s",
                      {"Content-Encoding": "gzip"}, 204),
                 peer.proc.pid, disk, stored, series, latest, lambda: [peer.proc.pid],
                 lambda: tree_bytes(root / "data" / "bench" / "_series"))


def influxql(url: str, q: str, post_it: bool = False) -> Any:
    call = requests.post if post_it else requests.get
    response = call(url + "/query", params={"q": q, "db": "bench"}, timeout=REQUEST_TIMEOUT_S)
    response.raise_for_status()
    return response.json()


def influx_rows(answer: Any) -> int:
    return sum(len(s["values"]) for r in answer["results"] for s in r.get("series", []))


def influx_series(answer: Any) -> int:
    return sum(len(r.get("series", [])) for r in answer["results"])


@contextmanager
def victoriametrics(workload: Workload, stack: ExitStack, settle_s: float
                    ) -> Iterator[System]:
    root = Path(tempfile.mkdtemp(prefix="fleet-vm-"))
    stack.callback(shutil.rmtree, root, ignore_errors=True)
    port = free_port()
    peer = Peer(["victoria-metrics", f"-httpListenAddr=127.0.0.1:{port}",
                 f"-storageDataPath={root}", "-retentionPeriod=100y", "-loggerLevel=WARN"],
                f"http://127.0.0.1:{port}", "/health", 200)
    stack.callback(peer.terminate)
    start, end = span(workload)
    cpu = f'{prom_name("cpu.usage_pct")}{{core="total"'
    series = Query(peer.url + "/api/v1/query_range", {
        "query": f'avg_over_time({cpu},host="{workload.host(0)}"}}[1m])',
        "start": str(int(start.timestamp())), "end": str(int(end.timestamp())), "step": "60s",
        "nocache": "1"}, {}, lambda a: sum(len(r["values"]) for r in a["data"]["result"]))
    latest = Query(peer.url + "/api/v1/query", {
        "query": f"last_over_time({cpu}}}[{LATEST_WINDOW_S}s])",
        "time": str(workload.newest + 1), "nocache": "1"}, {},
        lambda a: len(a["data"]["result"]))
    names = "|".join(prom_name(name) for name in dict(NINE))
    total = {"query": f'sum(count_over_time({{__name__=~"{names}"}}'
                      f'[{workload.steps * STEP_S + 60}s]))', "time": str(workload.newest + 1)}

    def stored() -> int:
        response = requests.get(peer.url + "/api/v1/query", params=total,
                                timeout=REQUEST_TIMEOUT_S)
        response.raise_for_status()
        result = response.json()["data"]["result"]
        return int(float(result[0]["value"][1])) if result else 0

    def disk() -> int:
        requests.get(peer.url + "/internal/force_flush", timeout=REQUEST_TIMEOUT_S)
        requests.get(peer.url + "/internal/force_merge", timeout=REQUEST_TIMEOUT_S)
        return settle(lambda: tree_bytes(root), settle_s, least=5)

    yield System("victoriametrics", version_of("victoria-metrics", "-version"),
                 Sink("victoriametrics", peer.url + "/api/v1/import/prometheus",
                      {"Content-Encoding": "gzip"}, 204),
                 peer.proc.pid, disk, stored, series, latest, lambda: [peer.proc.pid])


# --- measuring ------------------------------------------------------------------------------

def rss(pids: list[int]) -> dict[int, int]:
    out = {}
    for pid in pids:
        try:
            out[pid] = psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return out


def ingest(pool: ProcessPoolExecutor, system: System, workload: Workload, figures: Figures,
           max_seconds: float) -> None:
    """The fleet load with CLIENTS processes; totals, latencies, CPU and RSS into ``figures``."""
    figures.rss_start = rss(system.worker_pids())
    with multiprocessing.Manager() as manager:
        ready = manager.Barrier(CLIENTS + 1)
        futures = [pool.submit(send_share, system.sink, workload, client, CLIENTS, ready,
                               max_seconds) for client in range(CLIENTS)]
        ready.wait()  # every client has encoded its batches
        start_at = time.time()
        _ingest_window(system, workload, figures, futures, start_at)


def _ingest_window(system: System, workload: Workload, figures: Figures, futures: list[Any],
                   start_at: float) -> None:
    pids = {"server": system.root_pid}
    before, machine_before = cpu_snapshot(pids), psutil.cpu_times()
    samples = []  # (seconds since the start, RSS per pid), once a second
    while wait(futures, timeout=1.0).not_done:
        samples.append((time.time() - start_at, rss(system.worker_pids())))
    results = [future.result() for future in futures]
    cpu = cpu_used(before, cpu_snapshot(pids))
    cpu.update(machine_busy(machine_before, psutil.cpu_times()))
    figures.rss_end = rss(system.worker_pids())
    figures.seconds = max(result.finished for result in results) - start_at
    figures.rss_warm = next((sizes for at, sizes in samples if at >= figures.seconds / 10),
                            figures.rss_end)
    cpu["clients"] = sum(result.cpu_s for result in results)
    figures.cpu_cores = {group: s / figures.seconds for group, s in cpu.items()}
    latencies = [s for result in results for s in result.latencies]
    figures.points = sum(result.points for result in results)
    figures.failures = sum((result.failures for result in results), Counter())
    figures.complete = figures.points == workload.total
    figures.p50_ms = percentile(latencies, 0.5) * 1000
    figures.p99_ms = percentile(latencies, 0.99) * 1000
    for sample in (s for result in results for s in result.samples):
        print(f"  failure: {sample}")


def timed(query: Query, runs: int) -> tuple[float, int]:
    """Median milliseconds of ``runs`` GETs after one warm-up, and the entries answered."""
    times, entries = [], 0
    with requests.Session() as session:
        for run in range(runs + 1):
            began = time.perf_counter()
            response = session.get(query.url, params=query.params, headers=query.headers,
                                   timeout=REQUEST_TIMEOUT_S)
            elapsed = time.perf_counter() - began
            response.raise_for_status()
            entries = query.count(response.json())
            if run:
                times.append(elapsed * 1000)
    return statistics.median(times), entries


def measure(pool: ProcessPoolExecutor, system: System, workload: Workload,
            args: argparse.Namespace) -> Figures:
    figures = Figures(system.name, system.version)
    print(f"\n== {system.name}: {system.version}", flush=True)
    ingest(pool, system, workload, figures, args.max_seconds)
    print(f"ingest: {figures.points:,} points in {figures.seconds:.1f} s "
          f"({figures.points_per_s:,.0f}/s), p50 {figures.p50_ms:.1f} ms, p99 "
          f"{figures.p99_ms:.1f} ms, failures {dict(figures.failures)}", flush=True)
    figures.disk_bytes = system.disk_bytes()
    figures.fixed_bytes = system.fixed_bytes()
    figures.stored = system.stored()
    print(f"stored {figures.stored:,} points, {figures.disk_bytes:,} B on disk "
          f"({figures.bytes_per_point:.1f} B/point)", flush=True)
    figures.series_ms, figures.series_n = timed(system.series_query, args.query_runs)
    if system.latest_query is not None:
        figures.latest_ms, figures.latest_n = timed(system.latest_query, args.query_runs)
    print(f"queries: series {figures.series_ms:.2f} ms ({figures.series_n} buckets), latest "
          f"{'no API' if figures.latest_ms is None else f'{figures.latest_ms:.2f} ms'} "
          f"({figures.latest_n} series)", flush=True)
    if system.compressed_bytes is not None:
        figures.compressed_bytes = system.compressed_bytes()
        print(f"{packed_words(system.name)}: {figures.compressed_bytes:,} B "
              f"({figures.compressed_per_point:.2f} B/point)", flush=True)
        if figures.compressed_bytes:
            figures.series_packed_ms, _ = timed(system.series_query, args.query_runs)
            print(f"queries after that: series {figures.series_packed_ms:.2f} ms", flush=True)
    return figures


def run_system(pool: ProcessPoolExecutor, name: str, workload: Workload,
               args: argparse.Namespace) -> Figures:
    # Each system's points end when its turn starts, so "the latest value within 5 minutes"
    # finds them however long the systems before it took (a later run's turn began more than
    # 5 minutes after a workload made once, and MiniObserv's latest then found nothing).
    workload = dataclasses.replace(workload, newest=int(time.time()) // STEP_S * STEP_S)
    with ExitStack() as stack:
        if name in MINIOBSERV:
            system, store, server = stack.enter_context(miniobserv(name, workload, stack))
            figures = measure(pool, system, workload, args)
            bench = Bench(pool, store, server)
            figures.agent = bench.window(AGENT_CLIENTS, AGENT_BATCH, args.agent_seconds)
            print(f"agent-shaped: {figures.agent.batches_per_s:.1f} batches/s, p99 "
                  f"{figures.agent.p99_ms:.1f} ms", flush=True)
            return figures
        maker = influxdb if name == "influxdb" else victoriametrics
        figures = measure(pool, stack.enter_context(maker(workload, stack, args.settle_seconds)),
                          workload, args)
        return figures


def skip_reason(name: str) -> str | None:
    """Why a system cannot run here, or None."""
    binary = {"influxdb": "influxd", "victoriametrics": "victoria-metrics"}.get(name)
    if binary and shutil.which(binary) is None:
        return f"`{binary}` not installed (Debian package {name.replace('metrics', '-metrics')})"
    if name in ("postgres", "timescaledb"):
        bindir = find_pg_bindir()
        if bindir is None:
            return "no local PostgreSQL"
        if name == "timescaledb" and not has_timescaledb_files(bindir):
            return "the TimescaleDB extension is not installed"
    return None


# --- the report ------------------------------------------------------------------------------

LABELS = {"sqlite": "MiniObserv SQLite", "postgres": "MiniObserv PostgreSQL",
          "timescaledb": "MiniObserv TimescaleDB", "influxdb": "InfluxDB",
          "victoriametrics": "VictoriaMetrics"}


def fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "no API"
    if math.isnan(value):
        return "–"
    return f"{value:,.{digits}f}{unit}"


def rss_text(f: Figures) -> str:
    """Sum of the RSS before, at 10 % and at the end; the largest growth after 10 %."""
    if not f.rss_start:
        return "–"
    mb = [f"{sum(sizes.values()) / 2**20:.0f}" for sizes in (f.rss_start, f.rss_warm, f.rss_end)]
    same = set(f.rss_warm) == set(f.rss_end)  # the processes the flatness target compares
    return (" → ".join(mb) + f" MB, {f.rss_growth * 100:+.0f} %"
            + ("" if same else " (workers restarted)"))


def figure_rows(all_figures: list[Figures]) -> list[tuple[str, list[str]]]:
    def ingest_cell(f: Figures) -> str:
        cell = fmt(f.points_per_s, 0)
        return cell if f.complete else f"{cell} (incomplete: {f.points:,})"

    return [
        ("ingest, points/s (1000-point batches, 4 clients)", [ingest_cell(f) for f in
                                                               all_figures]),
        ("request latency p50 / p99, ms", [f"{fmt(f.p50_ms)} / {fmt(f.p99_ms)}"
                                           for f in all_figures]),
        ("failed requests", [str(sum(f.failures.values())) for f in all_figures]),
        ("points stored / on disk, B per point", [disk_cell(f) for f in all_figures]),
        (f"one series, {QUERY_HOURS} h in 1 m buckets, avg: median ms (buckets)",
         [f"{fmt(f.series_ms, 2)} ({f.series_n})" for f in all_figures]),
        ("the same after packing (PostgreSQL) or compressing (TimescaleDB) every sample",
         [fmt(f.series_packed_ms, 2) if f.compressed_bytes else "–" for f in all_figures]),
        ("latest value of every host, one metric: median ms (series)",
         [fmt(f.latest_ms, 2) + ("" if f.latest_ms is None else f" ({f.latest_n})")
          for f in all_figures]),
        ("RSS MB before → at 10 % → after the load (sum of gunicorn's workers), the largest "
         "growth of one process after 10 %",
         [rss_text(f) for f in all_figures]),
        ("CPU cores during the load: server / clients / whole machine",
         [f"{f.cpu_cores.get('server', 0):.2f} / {f.cpu_cores.get('clients', 0):.2f} / "
          f"{f.cpu_cores.get('machine', 0):.2f}" for f in all_figures]),
        ("agent-shaped load (40-point batches, 16 clients): batches/s, p99 ms",
         [f"{f.agent.batches_per_s:.1f}, {f.agent.p99_ms:.1f}" if f.agent else "–"
          for f in all_figures]),
    ]


def packed_words(name: str) -> str:
    return "with every window packed" if name == "postgres" else "with every chunk compressed"


def disk_cell(f: Figures) -> str:
    cell = f"{f.stored:,} / {fmt(f.bytes_per_point)}"
    if f.compressed_bytes:
        cell += f"; {f.compressed_per_point:.2f} {packed_words(f.name)}"
    if f.fixed_bytes and f.stored:
        cell += (f" ({(f.disk_bytes - f.fixed_bytes) / f.stored:.1f} without the "
                 f"{f.fixed_bytes / 2**20:.0f} MB preallocated series file)")
    return cell


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return "–"
    return f"{a / b:.2f}"


def ratio_rows(figures: list[Figures]) -> list[str]:
    peers = {f.name: f for f in figures if f.name in PEERS}
    rows = []
    for own in (f for f in figures if f.name in MINIOBSERV):
        for peer in peers.values():
            rows.append(f"| {LABELS[own.name]} / {LABELS[peer.name]} | "
                        f"{ratio(own.points_per_s, peer.points_per_s)} | "
                        f"{ratio(own.p99_ms, peer.p99_ms)} | "
                        f"{ratio(own.bytes_per_point, peer.bytes_per_point)} | "
                        f"{ratio(own.series_ms, peer.series_ms)} | "
                        f"{ratio(own.latest_ms, peer.latest_ms)} |")
    return rows


def target_rows(figures: list[Figures], points: int, today_points: float = TODAY_PG_POINTS_PER_S,
                today_agent: float = TODAY_AGENT_BATCHES_PER_S) -> list[str]:
    """Issue 10's targets, each with this run's figure and whether it is met."""
    by = {f.name: f for f in figures}
    pg, influx, sqlite = by.get("postgres"), by.get("influxdb"), by.get("sqlite")
    own = [f for f in figures if f.name in MINIOBSERV]
    rows: list[tuple[str, str, bool | None]] = []
    if pg:
        base = today_points or pg.points_per_s
        rows.append(("ingest ≥ 2.5× today's rate on PostgreSQL", f"{pg.points_per_s / base:.2f}×"
                     f" of {base:,.0f}", pg.points_per_s >= 2.5 * base))
        if influx:
            rows.append(("ingest ≥ ½ of InfluxDB's rate (PostgreSQL)",
                         f"{pg.points_per_s / influx.points_per_s:.2f}×",
                         pg.points_per_s >= influx.points_per_s / 2))
        rows.append(("p99 < 50 ms (PostgreSQL)", f"{pg.p99_ms:.1f} ms", pg.p99_ms < 50))
        if pg.agent:
            base = today_agent or pg.agent.batches_per_s
            rows.append(("agent-shaped ≥ 2× today's batches/s (PostgreSQL)",
                         f"{pg.agent.batches_per_s / base:.2f}× of {base:.1f}",
                         pg.agent.batches_per_s >= 2 * base))
        packed = pg.compressed_per_point if pg.compressed_bytes else pg.bytes_per_point
        rows.append(("plain PostgreSQL ≤ 60 B per point (every window packed)",
                     f"{packed:.1f} ({pg.bytes_per_point:.1f} before packing)", packed <= 60))
    if sqlite:
        rows.append(("SQLite ≤ 40 B per point", f"{sqlite.bytes_per_point:.1f}",
                     sqlite.bytes_per_point <= 40))
    if "timescaledb" in by:
        tsdb = by["timescaledb"]
        rows.append(("TimescaleDB compressed ≤ 3.0 B per point",
                     f"{tsdb.compressed_per_point:.2f}", tsdb.compressed_per_point <= 3.0))
    for f in own:
        rows.append((f"one series 24 h/1 m ≤ 5 ms median ({LABELS[f.name]})",
                     f"{f.series_ms:.2f} ms", f.series_ms <= 5))
        if influx:
            rows.append((f"one series no slower than InfluxDB ({LABELS[f.name]})",
                         f"{f.series_ms:.2f} vs {influx.series_ms:.2f} ms",
                         f.series_ms <= influx.series_ms))
            rows.append((f"latest of every host ≤ InfluxDB's time ({LABELS[f.name]})",
                         "no API" if f.latest_ms is None else
                         f"{f.latest_ms:.2f} vs {influx.latest_ms or math.nan:.2f} ms",
                         None if f.latest_ms is None else
                         f.latest_ms <= (influx.latest_ms or math.nan)))
        rows.append((f"worker RSS flat within 10 % ({LABELS[f.name]})",
                     f"{f.rss_growth * 100:+.1f} %", abs(f.rss_growth) <= 0.10))
    note = "" if points >= 10_000_000 else " (the issue sets them on the 10 M-point workload)"
    out = [f"Issue 10 targets at {points:,} points{note}:", "",
           "| target | this run | met |", "|---|---|---|"]
    verdict = {True: "yes", False: "no", None: "–"}
    out += [f"| {name} | {value} | {verdict[met]} |" for name, value, met in rows]
    return out


NOTES = (
    "Notes. \"Today's rate\" is --today-points / --today-agent (default: the constants TODAY_* "
    "in the script, this harness's 1 M run at 0133075's storage); when it is 0 the run is its "
    "own baseline and those rows read 1.00×. "
    "The one-series query spans 24 h but finds only the steps loaded (about 19 min of data at "
    "1 M points and 1000 hosts, 3 h at 10 M). RSS flatness compares each process's RSS at the "
    "end with its RSS once 10 % of the load's time had passed (the jump before that is "
    "warm-up: imports, connection pools); the peers' growth is their caches, not a target. "
    "CPU \"whole machine\" minus server and clients is other work on the machine, including "
    "the database server for MiniObserv's stores.")


def report(figures: list[Figures], skipped: dict[str, str], workload: Workload,
           args: argparse.Namespace, took: float, versions: list[str],
           runs: list[list[Figures]]) -> str:
    names = [LABELS[f.name] for f in figures]
    sync = "" if "-c" in gunicorn_options() else \
        " (its sync workers close the connection after each answer)"
    prose = [f"Command: `python benchmarks/fleet_compare.py {' '.join(args.argv)}` "
             f"({took / 60:.1f} min in all). {workload.hosts:,} hosts × 9 metrics at 10 s steps "
             f"({workload.per_host:,} points per host, {workload.steps:,} steps ending at the "
             f"start of the run), {workload.total:,} points in {workload.batches:,} batches of "
             f"≤ {workload.batch} points of one host, fleet order, gzip bodies, {CLIENTS} client "
             f"processes with a `requests` session each; each system alone on 127.0.0.1, "
             f"fresh, in turn. MiniObserv: `gunicorn {' '.join(gunicorn_options())} "
             f"miniobserv.server.wsgi:app`{sync}, JSON batches with an ingest token and a "
             f"`batch_id`; InfluxDB: line protocol to `/write?precision=s` (measurement = "
             f"metric name; config: reporting, monitor store, HTTP log off, cache snapshot "
             f"after 5 s cold, full compaction after 10 s cold); VictoriaMetrics: Prometheus "
             f"text to `/api/v1/import/prometheus` (`-retentionPeriod=100y`). Disk: "
             f"PostgreSQL `pg_total_relation_size` (TimescaleDB `hypertable_size`) of the "
             f"metric tables; SQLite file + WAL after `wal_checkpoint(TRUNCATE)`; InfluxDB "
             f"apparent size of data + wal once stable; VictoriaMetrics of its data dir after "
             f"`/internal/force_flush` and `/internal/force_merge`, once stable. Queries over "
             f"HTTP (MiniObserv with a read token; VictoriaMetrics with `nocache=1`), median "
             f"of {args.query_runs} after a warm-up: `cpu.usage_pct{{core=total}}` of one host "
             f"over the last {QUERY_HOURS} h in 1 m avg buckets (`/api/v1/metrics/query`; "
             f"`SELECT mean(value) … GROUP BY time(1m) fill(none)`; `query_range` step 60 s "
             f"of `avg_over_time(…[1m])`), and its latest value on every host within 5 min "
             f"(`/api/v1/metrics/latest` when the server has it; `SELECT last(value) … GROUP "
             f"BY host`; `last_over_time(…[5m])`). Agent-shaped load: `benchmarks/ingest.py`'s "
             f"window, 16 senders × 40-metric batches for {args.agent_seconds:.0f} s, after "
             f"the queries.",
             f"Commit: {commit()}.",
             f"Machine: {machine()}, {psutil.virtual_memory().total / 2**30:.1f} GiB RAM, "
             f"load average {args.load_before} before the run; {args.shared_note}",
             "Versions: " + "; ".join(versions) + ".",
             *(f"Skipped: {name}: {why}." for name, why in skipped.items())]
    lines = [BEGIN, "## Fleet workload side by side (issue 10)", "",
             textwrap.fill(" ".join(prose), 95, break_on_hyphens=False)]
    lines += ["", "| figure | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(names)]
    lines += [f"| {label} | " + " | ".join(cells) + " |"
              for label, cells in figure_rows(figures)]
    ratios = ratio_rows(figures)
    if ratios:
        lines += ["", "Ratios MiniObserv / peer (points/s: higher is better; the others: "
                  "lower is better):", "",
                  "| ratio | ingest points/s | p99 | B per point | one series | latest |",
                  "|---|---|---|---|---|---|", *ratios]
    lines += ["", *run_rows(runs), *target_rows(figures, workload.total, args.today_points, args.today_agent), "",
              textwrap.fill(NOTES, 95), END]
    return "\n".join(lines)


def commit() -> str:
    """HEAD's short hash, with ``+changes`` when the tree differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=30).stdout.strip()

    return (git("rev-parse", "--short", "HEAD") or "?") + (
        " + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def write_section(path: Path, section: str) -> None:
    """Replace the text between the markers (both included), or append the section."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


# --- main ------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--systems", default="sqlite,postgres,timescaledb,influxdb,"
                        "victoriametrics", help="comma list; absent ones are skipped")
    parser.add_argument("--today-points", type=float, default=TODAY_PG_POINTS_PER_S,
                        help="today's PostgreSQL points/s for the 2.5x target (a run of the "
                        "old storage with this harness); 0: this run is its own baseline")
    parser.add_argument("--today-agent", type=float, default=TODAY_AGENT_BATCHES_PER_S,
                        help="today's agent-shaped batches/s on PostgreSQL for the 2x target")
    parser.add_argument("--runs", type=int, default=3,
                        help="fresh runs of every system; the report gives medians")
    parser.add_argument("--query-runs", type=int, default=20)
    parser.add_argument("--agent-seconds", type=float, default=20.0)
    parser.add_argument("--max-seconds", type=float, default=3600.0,
                        help="bound on each system's load (then reported incomplete)")
    parser.add_argument("--settle-seconds", type=float, default=120.0,
                        help="bound on each wait for a peer's files to settle")
    parser.add_argument("--shared-note", default="the machine was shared with other work "
                        "at the time.", help="a sentence about the machine's other load")
    parser.add_argument("--write", type=Path, help="replace this file's fleet-compare section")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    args.systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = set(args.systems) - set(MINIOBSERV) - set(PEERS)
    if unknown:
        parser.error(f"unknown system(s): {', '.join(sorted(unknown))}")
    if args.hosts < 1 or args.points < args.hosts or args.query_runs < 3 or args.runs < 1:
        parser.error("needs --hosts ≥ 1, --points ≥ --hosts, --query-runs ≥ 3, --runs ≥ 1")
    return args


def median_of(runs: list[Figures]) -> Figures:
    """One system's figures over its runs: the run of the median ingest rate (its totals,
    CPU and RSS), with the median of every other figure over all runs."""
    ranked = sorted(runs, key=lambda f: f.points_per_s)
    out = dataclasses.replace(ranked[(len(ranked) - 1) // 2])
    for name in ("p50_ms", "p99_ms", "series_ms", "series_packed_ms"):
        setattr(out, name, statistics.median(getattr(f, name) for f in runs))
    if all(f.latest_ms is not None for f in runs):
        out.latest_ms = statistics.median(f.latest_ms or 0.0 for f in runs)
    by_disk = sorted(runs, key=lambda f: f.bytes_per_point)[(len(runs) - 1) // 2]
    out.disk_bytes, out.stored, out.fixed_bytes = by_disk.disk_bytes, by_disk.stored, \
        by_disk.fixed_bytes
    by_packed = sorted(runs, key=lambda f: f.compressed_per_point)[(len(runs) - 1) // 2]
    out.compressed_bytes = by_packed.compressed_bytes * out.stored // max(by_packed.stored, 1)
    agents = sorted((f.agent for f in runs if f.agent), key=lambda w: w.batches_per_s)
    out.agent = agents[(len(agents) - 1) // 2] if agents else None
    return out


def run_rows(runs: list[list[Figures]]) -> list[str]:
    """Each run's figures, one row per system, so the medians can be checked."""
    if len(runs) < 2:
        return []
    out = ["Every run (the table above gives the medians):", "",
           "| system | ingest points/s | p99 ms | B per point | one series ms | latest ms |"
           " agent-shaped batches/s |", "|---|---|---|---|---|---|---|"]
    for index, first in enumerate(runs[0]):
        mine = [run[index] for run in runs]

        def cells(value: Callable[[Figures], float | None], digits: int,
                  mine: list[Figures] = mine) -> str:
            return ", ".join(fmt(value(f), digits) for f in mine)

        out.append(f"| {LABELS[first.name]} | {cells(lambda f: f.points_per_s, 0)} | "
                   f"{cells(lambda f: f.p99_ms, 1)} | {cells(lambda f: f.bytes_per_point, 1)}"
                   + (f" ({packed_words(first.name).removeprefix('with ')} "
                      f"{cells(lambda f: f.compressed_per_point, 2)})"
                      if first.compressed_bytes else "")
                   + f" | {cells(lambda f: f.series_ms, 2)} | {cells(lambda f: f.latest_ms, 2)}"
                   f" | {cells(lambda f: f.agent.batches_per_s if f.agent else math.nan, 1)} |")
    return [*out, ""]


def versions_of(figures: list[Figures]) -> list[str]:
    return ([f"Python {sys.version.split()[0]}", f"SQLite {sqlite3.sqlite_version}"]
            + [f.version for f in figures if f.name != "sqlite"])


def main() -> None:
    args = parse_args()
    args.load_before = " ".join(f"{load:.2f}" for load in os.getloadavg())
    newest = int(time.time()) // STEP_S * STEP_S
    workload = Workload(args.hosts, args.points, newest)
    print(f"machine: {machine()}; {workload.total:,} points, {workload.hosts} hosts, "
          f"{workload.batches:,} batches", flush=True)
    skipped = {name: why for name in args.systems if (why := skip_reason(name))}
    for name, why in skipped.items():
        print(f"skipping {name}: {why}")
    runs: list[list[Figures]] = []
    began = time.monotonic()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(AGENT_CLIENTS, mp_context=context) as pool:
        list(pool.map(warm, range(AGENT_CLIENTS)))
        for run in range(args.runs):  # every system once per run, so noise spreads over all
            print(f"\n#### run {run + 1} of {args.runs}", flush=True)
            runs.append([run_system(pool, name, workload, args)
                         for name in args.systems if name not in skipped])
    figures = [median_of([run[index] for run in runs]) for index in range(len(runs[0]))]
    section = report(figures, skipped, workload, args, time.monotonic() - began,
                     versions_of(figures), runs)
    print("\n" + section)
    if args.write:
        write_section(args.write, section)
        print(f"\nwrote {args.write}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop everything on SIGTERM too
    try:
        main()
    except KeyboardInterrupt:  # every process and directory was stopped and removed on the way
        sys.exit("interrupted")
