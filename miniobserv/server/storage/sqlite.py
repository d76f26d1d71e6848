"""SQLite repositories: stdlib ``sqlite3`` in WAL mode (SPEC §7).

Times are INTEGER microseconds since the UTC epoch, so bucketing is exact integer arithmetic
and answers match PostgreSQL's ``date_bin``. Each batch is one ``BEGIN IMMEDIATE``
transaction, committed with ``synchronous=FULL`` so that a 202 means the batch is on disk.
``sum/avg/min/max/count`` and ``last`` run in SQL; percentiles are computed in
Python exactly as PostgreSQL's ``percentile_cont`` does. Connections come from a small
per-process pool (one thread uses a connection at a time), so request threads that come and
go do not leak connections.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from miniobserv.model import MetricBatch, is_label_key
from miniobserv.server.storage.base import (
    AGGREGATES,
    BUCKETS,
    EPOCH,
    HOST_GROUP,
    PERCENTILES,
    HostValue,
    MetricQuery,
    Point,
    Series,
    StorageError,
    StorageUnavailable,
    TopQuery,
    labels_text,
    to_micros,
)
from miniobserv.server.storage.claims import BatchClaim, metrics_claim
from miniobserv.server.storage.series import (
    Limits,
    SeriesKey,
    SeriesLedger,
    admit,
    batch_series,
)

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 5.0  # a writer waits this long for another process's transaction
PROGRESS_STEPS = 10_000  # virtual-machine steps between two looks at a read's deadline
MAX_IDLE_CONNECTIONS = 8
# FULL: in WAL mode each COMMIT fsyncs the WAL, so a batch answered 202 survives a power loss
# (NORMAL syncs only at checkpoints: the last commits could vanish). Cost: BENCHMARKS.md.
SYNCHRONOUS = "FULL"

# The allowlist of aggregate SQL, keyed by base.AGGREGATES; None: computed in Python.
AGGREGATE_SQL: Mapping[str, str | None] = {
    "avg": "avg(value)", "min": "min(value)", "max": "max(value)", "sum": "sum(value)",
    "count": "count(*)", "last": None, **{name: None for name in PERCENTILES},
}
assert set(AGGREGATE_SQL) == set(AGGREGATES), "every aggregate needs a plan"

_BUCKET = "(time - ((time % :width) + :width) % :width)"  # floor, also before 1970
_AGGREGATED = """SELECT {series} AS series, {bucket} AS bucket, {aggregate} AS value
    FROM metrics WHERE {where} GROUP BY series, bucket ORDER BY series, bucket"""
# ``last``: the newest point's value; among points of the same newest time, the greatest.
_LAST = """SELECT series, bucket, value FROM (
        SELECT {series} AS series, {bucket} AS bucket, value, row_number() OVER (
            PARTITION BY {series}, {bucket} ORDER BY time DESC, value DESC) AS rank
        FROM metrics WHERE {where})
    WHERE rank = 1 ORDER BY series, bucket"""
_VALUES = """SELECT {series} AS series, {bucket} AS bucket, value
    FROM metrics WHERE {where} ORDER BY series, bucket, value"""
_COUNT_SERIES = """SELECT count(*) FROM (
    SELECT DISTINCT json_extract(labels, :group) FROM metrics WHERE {where} LIMIT :limit)"""
_INSERT = "INSERT INTO metrics (time, host, name, value, labels) VALUES (?, ?, ?, ?, ?)"
_CLAIM_BATCH = """INSERT INTO ingested_batches (batch_id, kind, received_at, digest)
    VALUES (?, ?, ?, ?) ON CONFLICT (batch_id, kind) DO NOTHING"""
_CLAIMED_DIGEST = "SELECT digest FROM ingested_batches WHERE batch_id = ? AND kind = ?"
_TOUCH_HOST = """INSERT INTO hosts (host, last_seen) VALUES (?, ?)
    ON CONFLICT (host) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)"""
# Series keys travel as one JSON array of [name, labels_text] pairs: one parameter, one
# statement, each key looked up through the unique index on series(host, name, labels_text).
_EXISTING_SERIES = """SELECT s.name, s.labels_text FROM json_each(?) AS k
    JOIN series AS s ON s.host = ? AND s.name = json_extract(k.value, '$[0]')
        AND s.labels_text = json_extract(k.value, '$[1]')"""
_UPSERT_SERIES = """INSERT INTO series (host, name, labels_text, labels, first_seen, last_seen)
    SELECT ?, json_extract(value, '$[0]'), json_extract(value, '$[1]'),
        json_extract(value, '$[1]'), ?, ? FROM json_each(?) WHERE true
    ON CONFLICT (host, name, labels_text) DO UPDATE SET
        last_seen = max(series.last_seen, excluded.last_seen)"""


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime ``micros`` microseconds after the epoch."""
    return EPOCH + timedelta(microseconds=micros)


def percentile_cont(ordered: Sequence[float], fraction: float) -> float:
    """PostgreSQL's ``percentile_cont`` over ascending values, with the same arithmetic."""
    position = fraction * (len(ordered) - 1)
    lower, upper = math.floor(position), math.ceil(position)
    if lower == upper:
        return ordered[lower]
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def database_path(database_url: str) -> str:
    """The file of a ``sqlite:///path`` URL (``sqlite:////abs/path`` for absolute paths)."""
    if not database_url.startswith("sqlite:///"):
        raise ValueError("a SQLite URL starts with sqlite:///")
    path = database_url[len("sqlite:///"):].split("?", 1)[0]
    if not path or path == ":memory:":
        raise ValueError("SQLite needs a file path (sqlite:///path.db); :memory: is not shared")
    return path


def enable_wal(conn: sqlite3.Connection, timeout_s: float = BUSY_TIMEOUT_S) -> bool:
    """Put the database file in WAL mode (persistent) unless it already is; return True.

    Only when needed: switching takes an exclusive lock and fails at once, without the busy
    handler, while another connection uses the file (e.g. another process switching it too,
    just after migrating). So a busy switch is retried, re-reading the mode, for ``timeout_s``.
    The migrations leave the file in WAL mode already.
    """
    deadline = time.monotonic() + timeout_s
    while conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)
    return True


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn sqlite3 errors into StorageUnavailable (locked, unreadable) or StorageError."""
    try:
        yield
    except sqlite3.OperationalError as err:
        raise StorageUnavailable(f"database unavailable: {err}") from err
    except sqlite3.Error as err:
        raise StorageError(f"database error: {err}") from err


class SQLiteDatabase:
    """Connections to one SQLite file, handed out to one thread at a time."""

    def __init__(self, path: str, *, busy_timeout_s: float = BUSY_TIMEOUT_S,
                 statement_timeout: timedelta | None = None,
                 limits: Limits | None = None) -> None:
        self.path = path
        self.limits = limits or Limits()
        self.ledger = SeriesLedger()  # the series and hosts this process wrote lately
        self.busy_timeout_s = busy_timeout_s
        self.statement_timeout_s = None if statement_timeout is None else \
            statement_timeout.total_seconds()
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._wal = False

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")  # a constant
            if not self._wal:
                with self._lock:
                    self._wal = self._wal or enable_wal(conn)
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode, returned to the pool afterwards."""
        if self._closed:
            raise StorageUnavailable("the SQLite store is closed")
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            with translate_errors():
                conn = self._connect()
        try:
            yield conn
        finally:
            self._release(conn)

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if self._closed or conn.in_transaction or self._idle.qsize() >= MAX_IDLE_CONNECTIONS:
                conn.close()
            else:
                self._idle.put(conn)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back otherwise."""
        with translate_errors(), self.connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A connection for reading (each statement sees one consistent snapshot).

        SQLite has no statement_timeout: with ``statement_timeout`` (the server's
        ``REQUEST_TIMEOUT``) a progress handler interrupts the block's statements past it,
        and the block raises StorageUnavailable (503), as a PostgreSQL query cut by its
        statement_timeout does. Writes (batches, state, retention) are never cut.
        """
        with translate_errors(), self.connection() as conn:
            if self.statement_timeout_s is None:
                yield conn
                return
            deadline = time.monotonic() + self.statement_timeout_s
            conn.set_progress_handler(lambda: time.monotonic() > deadline, PROGRESS_STEPS)
            try:
                yield conn
            except sqlite3.OperationalError as err:
                if time.monotonic() <= deadline:
                    raise
                raise StorageUnavailable("canceling statement due to statement timeout "
                                         "(REQUEST_TIMEOUT)") from err
            finally:
                conn.set_progress_handler(None, 0)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            while not self._idle.empty():
                self._idle.get_nowait().close()


def insert_batch(db: SQLiteDatabase, claim: BatchClaim | None, host: str,
                 statement: str, rows: Iterable[Sequence[Any]],
                 series: Mapping[SeriesKey, int] | None = None) -> None:
    """Store one batch in one transaction: the claim, the limits, the rows, ``last_seen``.

    ``claim`` (None without a ``batch_id``) goes to ``ingested_batches``; ``statement`` is
    the ``INSERT`` of one row; ``series`` the batch's series keys (metrics only; see
    :func:`~miniobserv.server.storage.series.admit`). A ``batch_id`` claimed before with the
    same digest writes nothing (the retry of a stored batch); with another digest it raises
    BatchConflict. Raises LimitExceeded (storing nothing) past MAX_HOSTS or
    MAX_SERIES_PER_HOST.
    """
    moment = datetime.now(UTC)
    now = to_micros(moment)
    with db.write() as conn:
        if claim is not None and not _claim(conn, claim, now):
            return  # stored before: nothing more to do
        admitted = admit(SQLiteSeries(conn), db.ledger, db.limits, host, series or {}, moment)
        conn.executemany(statement, rows)
        conn.execute(_TOUCH_HOST, (host, now))
    admitted.remember(db.ledger)


class SQLiteSeries:
    """The series statements of :func:`admit` on a connection inside ``BEGIN IMMEDIATE``
    (which already serialises writers: the locks are no-ops)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def has_host(self, host: str) -> bool:
        return self._conn.execute("SELECT 1 FROM hosts WHERE host = ?", (host,)).fetchone() \
            is not None

    def count_hosts(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM hosts").fetchone()[0])

    def lock_hosts(self) -> None:
        pass

    def existing(self, host: str, keys: Sequence[SeriesKey]) -> set[SeriesKey]:
        rows = self._conn.execute(_EXISTING_SERIES, (json.dumps(keys), host)).fetchall()
        return {(name, text) for name, text in rows}

    def count_series(self, host: str) -> int:
        return int(self._conn.execute("SELECT count(*) FROM series WHERE host = ?",
                                      (host,)).fetchone()[0])

    def lock_host(self, host: str) -> None:
        pass

    def upsert_series(self, host: str, keys: Sequence[SeriesKey], now: datetime) -> None:
        micros = to_micros(now)
        self._conn.execute(_UPSERT_SERIES, (host, micros, micros, json.dumps(keys)))


def _claim(conn: sqlite3.Connection, claim: BatchClaim, now: int) -> bool:
    """Claim the batch id: True when claimed, False for a retry; may raise BatchConflict.

    Race-free: the caller's ``BEGIN IMMEDIATE`` holds the write lock from the claim on.
    """
    key = (claim.batch_id.hex, claim.kind)
    if conn.execute(_CLAIM_BATCH, (*key, now, claim.digest)).rowcount == 1:
        return True
    claim.check_retry(conn.execute(_CLAIMED_DIGEST, key).fetchone()[0])
    return False


class SQLiteMetrics:
    """Metrics in the ``metrics`` table of a SQLite file."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db
        from miniobserv.server.storage.sqlite_fleetquery import (  # imports this module
            SQLiteFleetQueries,
        )

        self._fleet_queries = SQLiteFleetQueries(db)

    def insert_batch(self, batch: MetricBatch) -> int:
        """Store the batch in one transaction, or acknowledge a known ``batch_id``."""
        rows = [(to_micros(m.time), m.host, m.name, m.value, labels_text(m.labels))
                for m in batch.metrics]
        insert_batch(self._db, metrics_claim(batch), batch.host, _INSERT, rows,
                     batch_series(batch))
        return len(batch.metrics)

    def query(self, query: MetricQuery) -> list[Series]:
        """Epoch-aligned buckets over ``start <= time <= end``, ascending, empty ones omitted."""
        if query.is_fleet_wide:
            return self._fleet_queries.query(query)
        if query.agg not in AGGREGATE_SQL or query.bucket not in BUCKETS:
            raise ValueError(f"unsupported bucket/aggregate: {query.bucket!r}/{query.agg!r}")
        if not all(is_label_key(key) for key, _ in query.labels) or \
                (query.group_by is not None and not is_label_key(query.group_by)):
            return to_series([], query.group_by)  # no stored label has such a key
        where, params = _where(query)
        series = "json_extract(labels, :group)" if query.group_by else "''"
        parts = {"series": series, "bucket": _BUCKET, "where": where}
        with self._db.read() as conn:
            if query.agg in PERCENTILES:
                rows = conn.execute(_VALUES.format(**parts), params)
                return to_series(_percentiles(rows, PERCENTILES[query.agg]), query.group_by)
            template = _LAST if query.agg == "last" else _AGGREGATED
            statement = template.format(aggregate=AGGREGATE_SQL[query.agg], **parts)
            return to_series(conn.execute(statement, params).fetchall(), query.group_by)

    def count_series(self, query: MetricQuery, limit: int) -> int:
        """Distinct ``group_by`` values of the matching points, at most ``limit``."""
        if query.is_fleet_wide:
            return self._fleet_queries.count_series(query, limit)
        if query.group_by is None:
            return 1
        if not all(is_label_key(key) for key, _ in query.labels) or \
                not is_label_key(query.group_by):
            return 0
        where, params = _where(query)
        with self._db.read() as conn:
            row = conn.execute(_COUNT_SERIES.format(where=where),
                               {**params, "limit": limit}).fetchone()
        return int(row[0])

    def hosts(self) -> list[str]:
        """Every host that sent an accepted batch, in code-point order."""
        with self._db.read() as conn:
            return [row[0] for row in conn.execute("SELECT host FROM hosts ORDER BY host")]

    def top(self, query: TopQuery) -> list[HostValue]:
        """The hosts of the highest (or lowest) aggregate over the range."""
        return self._fleet_queries.top(query)

    def serves_from_rollup(self, query: MetricQuery) -> bool:
        """Always False: SQLite has no rollups, every query reads the raw points."""
        return False


def _json_path(key: str) -> str:
    return f'$."{key}"'  # keys are [A-Za-z_][A-Za-z0-9_]*: nothing to escape


def _where(query: MetricQuery) -> tuple[str, dict[str, Any]]:
    """The conditions of ``query`` and their parameters; no host condition for ``host=None``,
    no label condition for ``group_by="host"`` (fleet-wide queries, :mod:`.sqlite_fleetquery`)."""
    params: dict[str, Any] = {"width": query.bucket_seconds * 1_000_000, "host": query.host,
                              "name": query.name, "start": to_micros(query.start),
                              "end": to_micros(query.end)}
    clauses = ["host = :host"] if query.host is not None else []
    clauses += ["name = :name", "time >= :start", "time <= :end"]
    for index, (key, value) in enumerate(query.labels):
        params[f"key{index}"], params[f"value{index}"] = _json_path(key), value
        clauses.append(f"json_extract(labels, :key{index}) = :value{index}")
    if query.group_by is not None and query.group_by != HOST_GROUP:
        params["group"] = _json_path(query.group_by)
        clauses.append("json_extract(labels, :group) IS NOT NULL")
    return " AND ".join(clauses), params


def _percentiles(rows: Iterable[tuple[str, int, float]],
                 fraction: float) -> Iterator[tuple[str, int, float]]:
    """One ``(series, bucket, percentile)`` per group of rows sorted by series, bucket, value."""
    for (series, bucket), group in itertools.groupby(rows, key=lambda row: row[:2]):
        yield series, bucket, percentile_cont([row[2] for row in group], fraction)


def to_series(rows: Iterable[tuple[str, int, float]], group_by: str | None) -> list[Series]:
    """Shape ``(series, bucket_micros, value)`` rows, sorted by series and bucket."""
    grouped: dict[str, list[Point]] = {}
    for key, bucket, value in rows:
        grouped.setdefault(key, []).append(Point(from_micros(bucket), float(value)))
    if group_by is None:
        return [Series(labels={}, points=grouped.get("", []))]
    return [Series(labels={group_by: key}, points=grouped[key]) for key in sorted(grouped)]


class SQLiteRepositories:
    """Every SQLite repository of one process, sharing one :class:`SQLiteDatabase`."""

    def __init__(self, database_url: str, *, statement_timeout: timedelta | None = None,
                 limits: Limits | None = None) -> None:
        self.db = SQLiteDatabase(database_path(database_url),
                                 statement_timeout=statement_timeout, limits=limits)
        self.metrics = SQLiteMetrics(self.db)
        from miniobserv.server.storage.sqlite_fleet import SQLiteFleet  # imports this module

        self.fleet = SQLiteFleet(self.db)
        from miniobserv.server.storage.sqlite_logs import SQLiteLogs  # imports this module

        self.logs = SQLiteLogs(self.db)

    def ping(self) -> None:
        """Raise StorageUnavailable unless the file answers a query now."""
        with self.db.read() as conn:
            conn.execute("SELECT 1 FROM hosts LIMIT 1").fetchall()

    def sync_retention(self, retention: timedelta, table: str = "metrics") -> bool:
        """Always False: on SQLite the maintenance job enforces retention."""
        return False

    def close(self) -> None:
        self.db.close()
