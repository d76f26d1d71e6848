"""SQLite plumbing: pooled connections in WAL mode, one ``BEGIN IMMEDIATE`` per batch.

Times are INTEGER microseconds since the UTC epoch. Each batch is one ``BEGIN IMMEDIATE``
transaction, committed with ``synchronous=FULL`` so that a 202 means the batch is on disk.
Connections come from a small
per-process pool (one thread uses a connection at a time), so request threads that come and
go do not leak connections. Reads are cut after ``REQUEST_TIMEOUT`` by a progress handler.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from miniobserv.server.storage.base import (
    EPOCH,
    StorageError,
    StorageUnavailable,
    to_micros,
)
from miniobserv.server.storage.claims import BatchClaim
from miniobserv.server.storage.series import (
    Limits,
    SeriesKey,
    SeriesLedger,
    admit,
)

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 5.0  # a writer waits this long for another process's transaction
PROGRESS_STEPS = 10_000  # virtual-machine steps between two looks at a read's deadline
MAX_IDLE_CONNECTIONS = 8
# FULL: in WAL mode each COMMIT fsyncs the WAL, so a batch answered 202 survives a power loss
# (NORMAL syncs only at checkpoints: the last commits could vanish). Cost: BENCHMARKS.md.
SYNCHRONOUS = "FULL"

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
        last_seen = max(series.last_seen, excluded.last_seen)
    RETURNING id, name, labels_text"""


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime ``micros`` microseconds after the epoch."""
    return EPOCH + timedelta(microseconds=micros)


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
                 statement: str,
                 rows: Callable[[Mapping[SeriesKey, int]], Iterable[Sequence[Any]]],
                 series: Mapping[SeriesKey, int] | None = None) -> None:
    """Store one batch in one transaction: the claim, the limits, the rows, ``last_seen``.

    ``claim`` (None without a ``batch_id``) goes to ``ingested_batches``; ``statement`` is
    the ``INSERT`` of one row, run (executemany, in order) over ``rows(ids)``, where ``ids``
    is the series id of each of ``series``, the batch's series keys (metrics only; see
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
        conn.executemany(statement, rows(admitted.ids))
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

    def upsert_series(self, host: str, keys: Sequence[SeriesKey],
                      now: datetime) -> dict[SeriesKey, int]:
        micros = to_micros(now)
        rows = self._conn.execute(_UPSERT_SERIES, (host, micros, micros, json.dumps(keys)))
        return {(name, text): series_id for series_id, name, text in rows.fetchall()}


def _claim(conn: sqlite3.Connection, claim: BatchClaim, now: int) -> bool:
    """Claim the batch id: True when claimed, False for a retry; may raise BatchConflict.

    Race-free: the caller's ``BEGIN IMMEDIATE`` holds the write lock from the claim on.
    """
    key = (claim.batch_id.hex, claim.kind)
    if conn.execute(_CLAIM_BATCH, (*key, now, claim.digest)).rowcount == 1:
        return True
    claim.check_retry(conn.execute(_CLAIMED_DIGEST, key).fetchone()[0])
    return False
