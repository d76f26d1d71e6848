"""What the fault tests (and ``benchmarks/faults_outage.py``) share: senders that count, and
the count of what was stored.

A :class:`BatchSender` is one host's agent-shaped sender: a thread that makes batches one
after the other and delivers each with the agent's own :class:`~miniobserv.agent.sender.Sender`
(gzip, ``batch_id``, the backoff, ``Retry-After``), retrying until it is acknowledged. Every
attempt is recorded (status, ``Retry-After``, how long it took, the exception). Batch ``n`` of
a host holds :data:`POINTS` points of ``cpu.usage_pct{core=total}`` inside the 10 s bucket
``base + n·10 s``, so :func:`stored_counts` (the query API, ``bucket=10s``, ``agg=count``)
tells for each batch whether it is stored once (``POINTS``), partly, twice or not at all.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import requests

from miniobserv.agent.sender import Sender
from miniobserv.agent.spool import SPOOL_FILE
from miniobserv.model import Metric, MetricBatch, format_time
from miniobserv.tokens import mint_token
from tests.agent.helpers import SECRET
from tests.conftest import (
    ThrowawayCluster,
    find_pg_bindir,
    has_timescaledb_files,
    with_database,
)

POINTS = 6  # points per batch, all inside one 10 s bucket
STEP = timedelta(seconds=10)
QUERY_TIMEOUT_S = 30.0


def base_time(hours_ago: float = 6.0) -> datetime:
    """A 10 s-aligned time far enough back that a few thousand batches stay in the past."""
    now = datetime.now(UTC) - timedelta(hours=hours_ago)
    return now.replace(microsecond=0) - timedelta(seconds=now.second % 10)


def make_batch(host: str, base: datetime, index: int) -> MetricBatch:
    start = base + index * STEP
    metrics = [Metric(start + timedelta(seconds=i), host, "cpu.usage_pct", float(index % 100),
                      {"core": "total"}) for i in range(POINTS)]
    return MetricBatch(host, metrics, uuid.uuid4())


@dataclass(frozen=True)
class Attempt:
    """One HTTP attempt: its status (None: an exception), ``Retry-After``, duration."""

    batch: int
    status: int | None
    retry_after: str | None
    seconds: float
    error: str | None
    at: float  # time.monotonic() when it ended


class CountingSession(requests.Session):
    """A session that hands every request's outcome to ``record``."""

    def __init__(self, record: Any) -> None:
        super().__init__()
        self._record = record

    def request(self, method: str | bytes, url: str | bytes,  # type: ignore[override]
                *args: Any, **kwargs: Any) -> requests.Response:
        began = time.monotonic()
        try:
            response = super().request(method, url, *args, **kwargs)
        except requests.RequestException as err:
            self._record(None, None, time.monotonic() - began, type(err).__name__)
            raise
        self._record(response.status_code, response.headers.get("Retry-After"),
                     time.monotonic() - began, None)
        return response


class BatchSender(threading.Thread):
    """Makes batches of ``host`` until ``stop_making`` is set, each sent until acknowledged.

    ``made`` lists every batch_id made (in order), ``acknowledged`` those answered 2xx,
    ``attempts`` every request. ``timeout`` is the client's bound on one request. The
    backoff is the agent's, shortened (``base_s``, ``cap_s``) so tests stay quick; a
    ``Retry-After`` still lengthens it, as in the agent.
    """

    def __init__(self, server_url: str, host: str, base: datetime, stop_making: threading.Event,
                 *, pace_s: float = 0.05, timeout: float = 15.0, base_s: float = 0.2,
                 cap_s: float = 2.0) -> None:
        super().__init__(name=f"sender-{host}", daemon=True)
        self.host, self.base, self.pace_s = host, base, pace_s
        self.stop_making = stop_making
        self.sender = Sender(server_url, SECRET, timeout=timeout,
                             session=CountingSession(self._record))
        self.sender.BASE_S, self.sender.CAP_S = base_s, cap_s
        self.made: list[uuid.UUID] = []
        self.acknowledged: list[uuid.UUID] = []
        self.outcomes: Counter[str] = Counter()
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()

    def _record(self, status: int | None, retry_after: str | None, seconds: float,
                error: str | None) -> None:
        with self._lock:
            self.attempts.append(Attempt(len(self.made) - 1, status, retry_after, seconds,
                                         error, time.monotonic()))

    def run(self) -> None:
        while not self.stop_making.is_set():
            batch = make_batch(self.host, self.base, len(self.made))
            assert batch.batch_id is not None
            self.made.append(batch.batch_id)
            result = self.sender.send(batch)
            self.outcomes[result.outcome] += 1
            if not result.is_sent:
                return  # dropped (a bug here) or aborted (stopped)
            self.acknowledged.append(batch.batch_id)
            time.sleep(self.pace_s)

    def acknowledged_since(self, at: float) -> int:
        """Acknowledged answers that ended after ``at`` (time.monotonic())."""
        with self._lock:
            return sum(1 for a in self.attempts if a.status is not None
                       and 200 <= a.status < 300 and a.at > at)

    def abort(self) -> None:
        self.sender.stop.set()


class OneShotPoster(threading.Thread):
    """Posts a new batch of ``host`` every ``every_s`` seconds, once each, never retried.

    The load a retrying sender stops making while it backs off: it shows what every single
    request got during an outage. Same ``made``/``acknowledged``/``attempts`` as BatchSender.
    """

    def __init__(self, server_url: str, host: str, base: datetime, *, every_s: float = 0.25,
                 timeout: float = 15.0) -> None:
        super().__init__(name=f"poster-{host}", daemon=True)
        self.url = server_url + "/api/v1/metrics"
        self.host, self.base, self.every_s, self.timeout = host, base, every_s, timeout
        self.made: list[uuid.UUID] = []
        self.acknowledged: list[uuid.UUID] = []
        self.attempts: list[Attempt] = []
        self.done = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        headers = {"Content-Type": "application/json",
                   "Authorization": f"Bearer {mint_token(SECRET, scope='ingest')}"}
        while not self.done.wait(self.every_s):
            batch = make_batch(self.host, self.base, len(self.made))
            assert batch.batch_id is not None
            self.made.append(batch.batch_id)
            began = time.monotonic()
            try:
                response = session.post(self.url, json=batch.to_json(), headers=headers,
                                        timeout=self.timeout)
            except requests.RequestException as err:
                self.attempts.append(Attempt(len(self.made) - 1, None, None,
                                             time.monotonic() - began, type(err).__name__,
                                             time.monotonic()))
                continue
            self.attempts.append(Attempt(len(self.made) - 1, response.status_code,
                                         response.headers.get("Retry-After"),
                                         time.monotonic() - began, None, time.monotonic()))
            if response.status_code == 202:
                self.acknowledged.append(batch.batch_id)
        session.close()


class Load:
    """``count`` BatchSenders (hosts ``<label>-0`` …), started at once; keyword arguments
    go to each. :meth:`finish` stops making batches and waits for the ones held."""

    def __init__(self, server_url: str, label: str, count: int = 4, liveness_s: float = 90.0,
                 **kwargs: Any) -> None:
        self.stop = threading.Event()
        self.liveness_s = liveness_s
        base = base_time()
        self.senders = [BatchSender(server_url, f"{label}-{i}", base, self.stop, **kwargs)
                        for i in range(count)]
        for sender in self.senders:
            sender.start()

    def delivered_after(self, at: float, count: int = 3) -> bool:
        """Each sender had ``count`` answers 2xx after ``at`` (time.monotonic())."""
        return all(sender.acknowledged_since(at) >= count for sender in self.senders)

    def wait_delivered(self, at: float = 0.0, count: int = 3) -> bool:
        return wait_until(lambda: self.delivered_after(at, count), self.liveness_s)

    def finish(self) -> None:
        """Stop making batches; each sender delivers the one it holds, then ends."""
        self.stop.set()
        for sender in self.senders:
            sender.join(self.liveness_s)
        self.abort()
        assert not any(sender.is_alive() for sender in self.senders), "a sender never delivered"

    def abort(self) -> None:
        self.stop.set()
        for sender in self.senders:
            sender.abort()
        for sender in self.senders:
            sender.join(15)

    @property
    def attempts(self) -> list[Attempt]:
        return [a for sender in self.senders for a in sender.attempts]


def spool_rows(spool_dir: Path) -> int:
    """Batches waiting in an agent's spool (``<SPOOL_DIR>/spool.sqlite3``), read-only."""
    path = spool_dir / SPOOL_FILE
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        try:
            return int(db.execute("SELECT count(*) FROM spool").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def read_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, scope='read')}"}


def stored_counts(server_url: str, host: str, base: datetime, batches: int) -> dict[int, int]:
    """Points stored per batch index of ``host`` (only indexes with points appear)."""
    response = requests.get(server_url + "/api/v1/metrics/query", headers=read_headers(),
                            params={"host": host, "name": "cpu.usage_pct",
                                    "label": "core:total", "bucket": "10s", "agg": "count",
                                    "from": format_time(base - STEP),
                                    "to": format_time(base + (batches + 1) * STEP)},
                            timeout=QUERY_TIMEOUT_S)
    assert response.status_code == 200, response.text
    counts: dict[int, int] = {}
    for point in response.json()["points"]:
        at = datetime.fromisoformat(point["time"].replace("Z", "+00:00"))
        counts[int((at - base) / STEP)] = int(point["value"])
    return counts


def point_counts(server_url: str, host: str, name: str, since: datetime, bucket: str = "10s",
                 label: str | None = None) -> dict[str, int]:
    """Points of ``host``'s ``name`` per bucket (start time -> count) from ``since`` on."""
    params = {"host": host, "name": name, "bucket": bucket, "agg": "count",
              "from": format_time(since),
              "to": format_time(datetime.now(UTC) + timedelta(minutes=1))}
    if label:
        params["label"] = label
    response = requests.get(server_url + "/api/v1/metrics/query", headers=read_headers(),
                            params=params, timeout=QUERY_TIMEOUT_S)
    response.raise_for_status()
    return {p["time"]: int(p["value"]) for p in response.json()["points"]}


def claimed_batch_ids(database_url: str) -> Counter[uuid.UUID]:
    """Every metric ``batch_id`` the database holds a claim for (each claim once: its key)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT batch_id FROM ingested_batches"
                            " WHERE kind = 'metrics'").fetchall()
    return Counter(row[0] for row in rows)


@dataclass
class Tally:
    """Made, acknowledged and stored batches of a set of senders."""

    made: int
    acknowledged: int
    stored_once: int
    partial_or_repeated: dict[str, dict[int, int]]  # host -> index -> points, when not POINTS
    missing_acknowledged: int  # acknowledged batches without their points
    unclaimed_acknowledged: int  # acknowledged batch_ids without a claim row
    stored_unmade: int  # points at indexes no sender made (never expected)

    @property
    def lost(self) -> int:
        return self.made - self.stored_once


def tally(server_url: str, database_url: str,
          senders: list[BatchSender] | list[OneShotPoster]) -> Tally:
    """Count what ``senders`` made and had acknowledged against what the server stored."""
    claims = claimed_batch_ids(database_url)
    made = acknowledged = once = missing = unclaimed = unmade = 0
    wrong: dict[str, dict[int, int]] = {}
    for sender in senders:
        counts = stored_counts(server_url, sender.host, sender.base, len(sender.made))
        acked = set(sender.acknowledged)
        made += len(sender.made)
        acknowledged += len(sender.acknowledged)
        for index, batch_id in enumerate(sender.made):
            stored = counts.pop(index, 0)
            once += stored == POINTS
            if stored not in (0, POINTS):
                wrong.setdefault(sender.host, {})[index] = stored
            if batch_id in acked:
                missing += stored == 0
                unclaimed += claims[batch_id] != 1
        unmade += sum(counts.values())
    return Tally(made, acknowledged, once, wrong, missing, unclaimed, unmade)


def wait_until(predicate: Any, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate`` until true; False after ``timeout`` (a liveness bound)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def status_of(url: str, timeout: float = 10.0) -> tuple[int | None, str | None]:
    """``(status, Retry-After)`` of a GET, ``(None, None)`` when nothing answers."""
    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException:
        return None, None
    return response.status_code, response.headers.get("Retry-After")


@dataclass(frozen=True)
class BenchDatabase:
    """A database on a cluster of its own (for the benchmarks), and what it runs."""

    cluster: ThrowawayCluster
    url: str
    version: str


@contextmanager
def durable_database(name: str, timescaledb: bool = True) -> Iterator[BenchDatabase]:
    """A new cluster with PostgreSQL's default durability (TimescaleDB when wanted and
    installed) holding the empty database ``name``; stopped and deleted afterwards."""
    bindir = find_pg_bindir()
    if bindir is None:
        sys.exit("needs a local PostgreSQL (./scripts/test installs it)")
    timescaledb = timescaledb and has_timescaledb_files(bindir)
    cluster = ThrowawayCluster(bindir, timescaledb=timescaledb, durable=True)
    try:
        admin = cluster.start()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # a constant of the caller's
            row = conn.execute("SHOW server_version").fetchone()
        version = f"PostgreSQL {row[0] if row else '?'}" + \
            (" + TimescaleDB" if timescaledb else "")
        yield BenchDatabase(cluster, with_database(admin, name), version)
    finally:
        cluster.destroy()
