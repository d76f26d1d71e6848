"""PostgreSQL plumbing: the connection pool, one transaction per batch, TimescaleDB policies.

Open the pool after gunicorn's fork (``open_repositories`` runs in each worker) and close it
at exit. A metric batch is one statement when this process knows its series
(:func:`write_samples`), else one transaction; a log batch is one transaction
(:func:`copy_batch`): the ``batch_id`` claim, the cardinality limits, the ``COPY ... FROM
STDIN`` of its rows and the host's ``last_seen``. Connection failures become
:class:`StorageUnavailable` (the API answers 503).
"""

from __future__ import annotations

import logging
import select
import struct
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import Format
from psycopg_pool import ConnectionPool

from miniobserv.server.storage.base import (
    StorageError,
    StorageUnavailable,
    to_micros,
)
from miniobserv.server.storage.claims import BatchClaim
from miniobserv.server.storage.series import (
    BatchSeries,
    Limits,
    SeriesKey,
    SeriesLedger,
    admit,
    cached_ids,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3  # per connection attempt: a dead database answers quickly
# How long a request waits for a pooled connection before 503: this, or REQUEST_TIMEOUT when
# shorter (the pool is given the request's own bound, so a request waiting for a database
# that is down never outlives it).
POOL_TIMEOUT_S = 5.0
PING_TIMEOUT_S = 1.0  # /readyz answers within about this long when the database is down
# A reconnection attempt gives up after this long; the next request starts a fresh one. Keeps
# the pool's exponential backoff short, so service resumes soon after a long outage.
RECONNECT_TIMEOUT_S = 10.0
# A pooled connection idle longer than this is proven alive by a round trip at its next
# checkout (a peer that vanished without closing its socket); one used more recently is
# taken without one unless the server has written to it since (see _check_out).
IDLE_CHECK_S = 5.0
RETENTION_LOCK_KEY = 0x6D696E696F6274  # serialises retention-policy changes across workers
# Each table's retention policy first runs at its own offset, as its migration set it, clear
# of every other policy's first run (0007: samples; 0002: logs).
RETENTION_STARTS: Mapping[str, str] = {"samples": "1 hour 17 minutes", "logs": "1 hour 43 minutes"}

_CLAIM_BATCH = """INSERT INTO ingested_batches (batch_id, kind, received_at, digest)
    VALUES (%s, %s, %s, %s) ON CONFLICT (batch_id, kind) DO NOTHING"""
_CLAIMED_DIGEST = "SELECT digest FROM ingested_batches WHERE batch_id = %s AND kind = %s"
_TOUCH_HOST = """INSERT INTO hosts (host, last_seen) VALUES (%s, %s)
    ON CONFLICT (host) DO UPDATE SET last_seen = greatest(hosts.last_seen, excluded.last_seen)"""
# A batch's samples and its host's last_seen in ONE statement (atomic in autocommit mode);
# with a claim, both only when the claim is new (a retry writes nothing). The samples go in
# by a plain INSERT first (the cheapest for the server: measured 2.8 ms of server CPU per
# 1000 points against 4.4 with ON CONFLICT and 3.5 with COPY; measured again with the
# columns, alternating batches on one connection: backend CPU 2.80 ms against 3.15 for
# COPY FORMAT BINARY in a transaction with the claim and the host, client CPU 1.12 ms against
# 2.74, digest included, and one round trip against five); only when that meets a stored
# (series, time) is it sent again with ON CONFLICT DO UPDATE: a later write of a series and
# time replaces the value. The batch is deduplicated first (last one wins), as ON CONFLICT
# DO UPDATE may not touch a row twice.
_CLAIM_PART = """claim AS (INSERT INTO ingested_batches (batch_id, kind, received_at, digest)
    VALUES (%(batch_id)s, %(kind)s, %(now)s, %(digest)s)
    ON CONFLICT (batch_id, kind) DO NOTHING RETURNING 1), """
_WRITE_SAMPLES = """WITH {claim}written AS (INSERT INTO samples (series_id, time, value)
        SELECT * FROM unnest(%(ids)b, %(times)b, %(values)b) {claimed}{replace})
    INSERT INTO hosts (host, last_seen) SELECT %(host)s, %(now)s {claimed}
    ON CONFLICT (host) DO UPDATE SET last_seen = greatest(hosts.last_seen, excluded.last_seen)
    RETURNING 1"""
_CLAIMED = "WHERE EXISTS (SELECT 1 FROM claim)"
_REPLACE = " ON CONFLICT (series_id, time) DO UPDATE SET value = excluded.value"
# (claimed, replacing) -> statement
WRITE: Mapping[tuple[bool, bool], str] = {
    (claimed, replacing): _WRITE_SAMPLES.format(claim=_CLAIM_PART if claimed else "",
                                                claimed=_CLAIMED if claimed else "",
                                                replace=_REPLACE if replacing else "")
    for claimed in (False, True) for replacing in (False, True)}
SAMPLES_KEY = "pk_samples"

# Advisory lock classes (the two-int4 key space, apart from the bigint keys above): one lock
# per host while its new series are counted and created, one while a new host is admitted.
SERIES_LOCK_CLASS = 0x6D6F7365  # "mose"
HOSTS_LOCK_CLASS = 0x6D6F686F  # "moho"
_EXISTING_SERIES = """SELECT s.name, s.labels_text
    FROM unnest(%s::text[], %s::text[]) AS k(name, labels_text)
    JOIN series AS s ON s.host = %s AND s.name = k.name AND s.labels_text = k.labels_text"""
_UPSERT_SERIES = """INSERT INTO series (host, name, labels_text, labels, first_seen, last_seen)
    SELECT %(host)s, k.name, k.labels_text, k.labels_text::jsonb, %(now)s, %(now)s
    FROM unnest(%(names)s::text[], %(texts)s::text[]) WITH ORDINALITY AS k(name, labels_text, n)
    ORDER BY k.n
    ON CONFLICT (host, name, labels_text) DO UPDATE SET
        last_seen = greatest(series.last_seen, excluded.last_seen)
    RETURNING id, name, labels_text"""

# Continuous aggregates of migration 0007 by bucket, and how each aggregate is computed from
# their rows (several per bucket when several label sets match). Both read the raw table, so
# min, max, count and last equal the raw query's exactly; sum and avg add the same values,
# maybe in another order (equal up to float rounding; exactly when the sums are exact).
ROLLUP_VIEWS: Mapping[str, str] = {"1h": "samples_1h", "1d": "samples_1d"}
# 0007's refresh policies (0005's, rebuilt on samples): each view refreshes
# [now - start_offset, now - REFRESH_END].
ROLLUP_WIDTHS: Mapping[str, timedelta] = {"samples_1h": timedelta(hours=1),
                                          "samples_1d": timedelta(days=1)}
REFRESH_START = timedelta(days=3)
REFRESH_END = timedelta(hours=1)
REFRESH_MARGIN = timedelta(hours=1)  # the window ends this far inside the raw retention
# When a refresh policy is replaced, its first run, as migration 0007 staggers them.
REFRESH_FIRST_RUN: Mapping[str, timedelta] = {"samples_1h": timedelta(minutes=7),
                                              "samples_1d": timedelta(minutes=37)}


# --- arrays in PostgreSQL's binary format, built in one struct.pack each ---------------------
# psycopg dumps list parameters element by element in Python (~1 ms per 1000 elements and
# array); a batch's three arrays are built here instead and sent as they are.

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # binary timestamptz: microseconds since then
PG_EPOCH_MICROS = to_micros(PG_EPOCH)


class BinaryArray(bytes):
    """A one-dimensional array in PostgreSQL's binary format, typed by its subclass: the
    array's oid, its elements' oid and their ``struct`` code (all 8 bytes wide)."""

    oid: int = 0
    element_oid: int = 0
    code: str = ""

    @classmethod
    def of(cls, values: Sequence[Any]) -> BinaryArray:
        count = len(values)
        if count == 0:
            return cls(struct.pack(">iiI", 0, 0, cls.element_oid))
        items: list[Any] = [8] * (2 * count)  # each element: its length, then its value
        items[1::2] = values
        return cls(struct.pack(f">iiIii{'i' + cls.code}" + ("i" + cls.code) * (count - 1),
                               1, 0, cls.element_oid, count, 1, *items))


class Int8Array(BinaryArray):
    oid, element_oid, code = 1016, 20, "q"


class Float8Array(BinaryArray):
    oid, element_oid, code = 1022, 701, "d"


class TimestamptzArray(BinaryArray):
    """Of microseconds since PG_EPOCH."""

    oid, element_oid, code = 1185, 1184, "q"


class _ArrayDumper(Dumper):
    """Sends a :class:`BinaryArray` as it is, typed by its class."""

    format = Format.BINARY

    def __init__(self, cls: type, context: Any = None) -> None:
        super().__init__(cls, context)
        self.oid = cls.oid  # type: ignore[attr-defined]

    def dump(self, obj: Any) -> bytes:
        return bytes(obj)


for _kind in (Int8Array, Float8Array, TimestamptzArray):
    psycopg.adapters.register_dumper(_kind, _ArrayDumper)


def pool_kwargs(database_url: str) -> dict[str, Any]:
    """Connection options the URL does not set itself: a short connect timeout, a name."""
    given = conninfo_to_dict(database_url)
    defaults = {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "miniobserv"}
    return {key: value for key, value in defaults.items() if key not in given}


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn psycopg errors into StorageUnavailable (cannot connect) or StorageError."""
    try:
        yield
    except psycopg.OperationalError as err:  # includes psycopg_pool.PoolTimeout
        raise StorageUnavailable(f"database unavailable: {_first_line(err)}") from err
    except psycopg.Error as err:
        raise StorageError(f"database error: {_first_line(err)}") from err


# Set by read_rows around its checkout: the pool's check may then skip its round trip.
_READING = threading.local()


def read_rows(pool: ConnectionPool, statement: Any, params: Mapping[str, Any] | None = None
              ) -> list[tuple[Any, ...]]:
    """All rows of one read statement, in ONE round trip in the steady state.

    The statement runs in autocommit mode (its own transaction: no BEGIN and COMMIT round
    trips), on a connection the pool's check hands over without its own round trip when it
    already has this thread's statement_timeout (:meth:`PostgresDatabase._check_out`). That
    check otherwise proves the connection alive; here a read that finds its connection
    broken (the database restarted, the backend was terminated) runs once more on a checked
    connection: a read can be repeated. The series query: 4 round trips -> 1.
    """
    with translate_errors():
        for optimistic in (True, False):
            with _connection(pool, optimistic) as conn, autocommit(conn):
                try:
                    return conn.execute(statement, params).fetchall()
                except psycopg.OperationalError:
                    if not (optimistic and conn.broken):
                        raise
    raise AssertionError("unreachable: the second attempt returns or raises")


@contextmanager
def autocommit(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """``conn`` in autocommit mode for the block (each statement its own transaction: no
    BEGIN and COMMIT round trips; session settings outside any transaction), then in the
    mode it had, unless the block closed it."""
    before = conn.autocommit
    conn.autocommit = True
    try:
        yield conn
    finally:
        if not conn.closed:
            conn.autocommit = before


@contextmanager
def _connection(pool: ConnectionPool, optimistic: bool) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection, taken with ``optimistic`` set for the pool's check."""
    _READING.optimistic = optimistic
    try:
        conn = pool.getconn()
    finally:
        _READING.optimistic = False
    try:
        yield conn
    finally:
        pool.putconn(conn)  # the pool discards a broken connection


def configure_session(conn: psycopg.Connection[Any]) -> None:
    """The pool's set-up of each new connection: the session's TimeZone is UTC, so psycopg
    reads timestamptz values as datetimes in :data:`datetime.UTC` itself (no zone to convert
    from: ``astimezone(UTC)`` and ``format_time`` skip their conversion). No statement's
    meaning depends on the session's zone (``date_bin`` and ``time_bucket`` are aligned to
    fixed instants)."""
    with autocommit(conn):
        conn.execute("SET TimeZone TO 'UTC'")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@dataclass(frozen=True)
class Ingest:
    """What every batch's transaction needs besides its rows: the limits and this
    process's ledger of series and hosts written lately."""

    pool: ConnectionPool
    limits: Limits = field(default_factory=Limits)
    ledger: SeriesLedger = field(default_factory=SeriesLedger)


def copy_batch(ingest: Ingest, claim: BatchClaim | None, host: str,
               statement: str, rows: Iterable[Sequence[Any]],
               series: Mapping[SeriesKey, int] | None = None, first: str | None = None) -> None:
    """Store one batch in one transaction: the claim, the limits, the COPY, ``last_seen``.

    ``first`` (a constant statement) runs before anything else in the transaction.

    ``claim`` (None without a ``batch_id``) goes to ``ingested_batches``; ``statement`` is
    the ``COPY ... FROM STDIN`` of ``rows``; ``series`` the batch's series keys, if any
    (see :func:`~miniobserv.server.storage.series.admit`). A ``batch_id`` claimed
    before with the same digest writes nothing (the retry of a stored batch); with another
    digest it raises BatchConflict. Raises LimitExceeded (storing nothing) past MAX_HOSTS or
    MAX_SERIES_PER_HOST.
    """
    now = datetime.now(UTC)
    with translate_errors(), ingest.pool.connection() as conn, conn.transaction():
        if first is not None:
            conn.execute(first)
        if claim is not None and not _claim(conn, claim, now):
            return  # stored before: nothing more to do
        admitted = admit(PostgresSeries(conn), ingest.ledger, ingest.limits, host,
                         series or {}, now)
        with conn.cursor().copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute(_TOUCH_HOST, (host, now))
    admitted.remember(ingest.ledger)


def write_samples(ingest: Ingest, claim: BatchClaim | None, host: str,
                  series: BatchSeries) -> None:
    """Store one metric batch: the claim, the limits, the samples and ``last_seen``.

    When this process's ledger knows the host and every series as written lately (the
    steady state), the batch is ONE statement (:data:`WRITE`), one round trip in all (the
    pool's check costs none then; two when it replaces stored values). Otherwise one
    transaction: the claim, :func:`admit` (which checks the limits and upserts the series,
    returning their ids), then the same statement without its claim, replacing. Same outcomes as
    :func:`copy_batch`.
    """
    now = datetime.now(UTC)
    ids = cached_ids(ingest.ledger, host, series.first, now)
    with translate_errors(), ingest.pool.connection() as conn, autocommit(conn):
        if ids is not None and _write_at_once(conn, claim, _write_params(ids, host,
                                                                          series, now)):
            return
        with conn.transaction():
            if claim is not None and not _claim(conn, claim, now):
                return  # stored before: nothing more to do
            admitted = admit(PostgresSeries(conn), ingest.ledger, ingest.limits, host,
                             series.first, now)
            conn.execute(WRITE[False, True], _write_params(admitted.ids, host, series, now))
    admitted.remember(ingest.ledger)


def _write_at_once(conn: psycopg.Connection[Any], claim: BatchClaim | None,
                   params: dict[str, Any]) -> bool:
    """The steady state's one statement; False when the claim vanished meanwhile (pruned:
    the caller claims again). Raises BatchConflict."""
    if claim is not None:
        params.update(batch_id=claim.batch_id, kind=claim.kind, digest=claim.digest)
    try:
        row = conn.execute(WRITE[claim is not None, False], params).fetchone()
    except psycopg.errors.UniqueViolation as err:  # a stored (series, time): replace it
        if not (err.diag.constraint_name or "").endswith(SAMPLES_KEY):  # a chunk's: 1_pk_samples
            raise
        row = conn.execute(WRITE[claim is not None, True], params).fetchone()
    return row is not None or claim is None or _is_retry(conn, claim)


def _write_params(ids: Mapping[SeriesKey, int], host: str, series: BatchSeries,
                  now: datetime) -> dict[str, Any]:
    """The statement's parameters: the batch's samples in (series id, time) order, the
    last of a repeated (series, time) only (ON CONFLICT DO UPDATE may not touch a row
    twice, and the last write wins)."""
    columns = series.columns
    by_id: dict[int, dict[int, float]] = {}
    # Each slot's points, by time: the dict of its series (two slots may share one).
    by_slot = [by_id.setdefault(ids[key], {}) for key in series.keys]
    for slot, micros, value in zip(columns.slots, columns.times, columns.values, strict=True):
        by_slot[slot][micros] = value
    # In key order: each series' points go into its index leaf one after the other, which
    # lets PostgreSQL split leaves after the new item (measured: 31 B of index per point
    # instead of 51 when series alternate).
    id_column: list[int] = []
    times: list[int] = []
    values: list[float] = []
    for series_id in sorted(by_id):
        points = by_id[series_id]
        ordered = sorted(points)  # usually in order already: one pass
        id_column += [series_id] * len(ordered)
        times += [micros - PG_EPOCH_MICROS for micros in ordered]
        values += [points[micros] for micros in ordered]
    return {"ids": Int8Array.of(id_column), "times": TimestamptzArray.of(times),
            "values": Float8Array.of(values), "host": host, "now": now}


def _is_retry(conn: psycopg.Connection[Any], claim: BatchClaim) -> bool:
    """After a claim that claimed nothing: True for the retry of a stored batch (or
    BatchConflict), False when the claim vanished meanwhile (pruned: claim again)."""
    row = conn.execute(_CLAIMED_DIGEST, (claim.batch_id, claim.kind)).fetchone()
    if row is None:
        return False
    claim.check_retry(row[0])
    return True


class PostgresSeries:
    """The series statements of :func:`admit` inside the batch's transaction."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def has_host(self, host: str) -> bool:
        return self._conn.execute("SELECT 1 FROM hosts WHERE host = %s", (host,)).fetchone() \
            is not None

    def count_hosts(self) -> int:
        return int(self._one("SELECT count(*) FROM hosts"))

    def lock_hosts(self) -> None:
        self._conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (HOSTS_LOCK_CLASS,))

    def existing(self, host: str, keys: Sequence[SeriesKey]) -> set[SeriesKey]:
        names, texts = [key[0] for key in keys], [key[1] for key in keys]
        rows = self._conn.execute(_EXISTING_SERIES, (names, texts, host)).fetchall()
        return {(name, text) for name, text in rows}

    def count_series(self, host: str) -> int:
        return int(self._one("SELECT count(*) FROM series WHERE host = %s", host))

    def lock_host(self, host: str) -> None:
        self._conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                           (SERIES_LOCK_CLASS, host))

    def upsert_series(self, host: str, keys: Sequence[SeriesKey],
                      now: datetime) -> dict[SeriesKey, int]:
        rows = self._conn.execute(_UPSERT_SERIES, {"host": host, "now": now,
                                                   "names": [key[0] for key in keys],
                                                   "texts": [key[1] for key in keys]}).fetchall()
        return {(name, text): series_id for series_id, name, text in rows}

    def _one(self, statement: str, *params: Any) -> Any:
        row = self._conn.execute(statement, params or None).fetchone()
        assert row is not None
        return row[0]


def _claim(conn: psycopg.Connection[Any], claim: BatchClaim, now: datetime) -> bool:
    """Claim the batch id in this transaction: True when claimed, False for a retry.

    The INSERT waits for a concurrent transaction holding the same key, so of two at once
    exactly one claims; the other's next statement (READ COMMITTED: a new snapshot) reads
    the committed digest and is a retry or raises BatchConflict. A claim pruned by the
    maintenance job between the two statements is simply claimed on the next round.
    """
    for _ in range(2):
        params = (claim.batch_id, claim.kind, now, claim.digest)
        if conn.execute(_CLAIM_BATCH, params).rowcount == 1:
            return True
        row = conn.execute(_CLAIMED_DIGEST, (claim.batch_id, claim.kind)).fetchone()
        if row is not None:
            claim.check_retry(row[0])
            return False
    raise StorageError(f"batch_id {claim.batch_id} claimed and pruned meanwhile; retry")


def find_rollups(conn: psycopg.Connection[Any]) -> frozenset[str]:
    """The rollup views (continuous aggregates of ROLLUP_VIEWS) of the current schema."""
    if not has_timescaledb(conn):
        return frozenset()
    rows = conn.execute(
        "SELECT view_name FROM timescaledb_information.continuous_aggregates"
        " WHERE view_schema = current_schema() AND view_name = ANY(%s)",
        (list(ROLLUP_VIEWS.values()),)).fetchall()
    return frozenset(row[0] for row in rows)


class PostgresDatabase:
    """The connection pool of one process and what acts on the database as a whole.

    ``statement_timeout`` (the server's ``REQUEST_TIMEOUT``) cuts any query of a pooled
    connection running longer: the repository raises StorageUnavailable and the API answers
    503. Work that may rightly take longer runs inside :meth:`unbounded_statements`.
    Migrations use connections of their own and are never cut.

    During a database outage a request waits at most ``pool_timeout`` (POOL_TIMEOUT_S, or
    ``statement_timeout`` when shorter) for a connection, then gets StorageUnavailable. The
    pool reconnects by itself: a connection attempt retries with backoff (1, 2, 4 s …) for
    RECONNECT_TIMEOUT_S, then gives up; the next waiting request starts a new one, so the
    first requests after the database is back are served within a few seconds.
    """

    def __init__(self, database_url: str, *, min_size: int = 1, max_size: int = 10,
                 statement_timeout: timedelta | None = None) -> None:
        self.url = database_url
        self._statement_timeout_ms = None if statement_timeout is None else \
            max(1, round(statement_timeout.total_seconds() * 1000))
        self._unbounded = threading.local()
        self._sessions: weakref.WeakKeyDictionary[psycopg.Connection[Any], Session] = \
            weakref.WeakKeyDictionary()
        self.pool_timeout = POOL_TIMEOUT_S if statement_timeout is None else \
            min(POOL_TIMEOUT_S, statement_timeout.total_seconds())
        self.pool = ConnectionPool(
            database_url, min_size=min_size, max_size=max_size, open=False,
            timeout=self.pool_timeout, reconnect_timeout=RECONNECT_TIMEOUT_S,
            check=self._check_out, configure=configure_session,
            kwargs=pool_kwargs(database_url), name="miniobserv")

    def open(self) -> PostgresDatabase:
        """Open the pool without waiting: the server starts even while the database is down."""
        self.pool.open(wait=False)
        return self

    def _check_out(self, conn: psycopg.Connection[Any]) -> None:
        """The pool's check at each checkout: prove the connection alive, give it the
        statement_timeout of the calling thread (0, none, when unbounded).

        In the steady state this costs no round trip: a connection this process used less
        than IDLE_CHECK_S ago, that already has the wanted timeout, and to which the server
        has written nothing since (a server that ends a session, by shutdown, restart or
        ``pg_terminate_backend``, says so on the socket before it closes it) is taken as it
        is. So is, whatever its idle time, a connection with the wanted timeout handed to
        :func:`read_rows`, whose statement proves it and which reads again on a checked
        connection when it was broken. Otherwise one statement sets the timeout (or checks
        it, without one), and a dead connection fails it: the pool then discards it and tries
        another. A connection that dies between this check and its statement fails that
        request (503) and is discarded when it comes back to the pool, as any connection
        lost during a request.
        """
        wanted = None if self._statement_timeout_ms is None else \
            0 if getattr(self._unbounded, "active", False) else self._statement_timeout_ms
        now = time.monotonic()
        known = self._sessions.get(conn)
        if known is not None and known.timeout_ms == wanted and (
                getattr(_READING, "optimistic", False)
                or (now - known.used_at < IDLE_CHECK_S and known.is_quiet(conn))):
            known.used_at = now
            return
        self._sessions.pop(conn, None)  # unknown until the statement below succeeds
        if wanted is None:
            ConnectionPool.check_connection(conn)
        else:
            with autocommit(conn):  # a session setting, outside any transaction
                conn.execute("SELECT set_config('statement_timeout', %s, false)",
                             (f"{wanted}ms",))
        self._sessions[conn] = Session(conn, wanted, now)

    @contextmanager
    def unbounded_statements(self) -> Iterator[None]:
        """Connections this thread takes inside the block have no statement_timeout.

        For background work that may take long, such as the first retention delete after a
        backlog, which REQUEST_TIMEOUT would cut again at every attempt.
        """
        self._unbounded.active = True
        try:
            yield
        finally:
            self._unbounded.active = False

    def ping(self) -> None:
        """Raise StorageUnavailable unless the database answers ``SELECT 1`` now."""
        with translate_errors(), self.pool.connection(timeout=PING_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")

    def has_timescaledb(self) -> bool:
        """True when this database has the timescaledb extension installed."""
        with translate_errors(), self.pool.connection() as conn:
            return has_timescaledb(conn)

    def sync_retention(self, retention: timedelta, table: str = "samples") -> bool:
        """Make TimescaleDB's retention policy on ``table`` drop chunks past ``retention``.

        Returns False (and changes nothing) without TimescaleDB: the maintenance job then
        enforces retention. Safe to call from several workers at once.
        """
        with translate_errors(), self.pool.connection() as conn:
            return sync_retention(conn, retention, table)

    def close(self) -> None:
        self.pool.close()


class Session:
    """What the pool knows of one of its connections: the statement_timeout it was given
    (None: the server's default), when it was last handed out (``time.monotonic()``), and a
    poller of its socket, registered once."""

    __slots__ = ("timeout_ms", "used_at", "_poller")

    def __init__(self, conn: psycopg.Connection[Any], timeout_ms: int | None,
                 used_at: float) -> None:
        self.timeout_ms = timeout_ms
        self.used_at = used_at
        self._poller = select.poll()
        self._poller.register(conn.pgconn.socket, select.POLLIN)

    def is_quiet(self, conn: psycopg.Connection[Any]) -> bool:
        """True when ``conn`` is idle, in working order and nothing waits on its socket: an
        idle session receives nothing unless the server is ending it (or sends a notice)."""
        pgconn = conn.pgconn
        return pgconn.status == psycopg.pq.ConnStatus.OK \
            and pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE \
            and not self._poller.poll(0)


def has_timescaledb(conn: psycopg.Connection[Any]) -> bool:
    """True when the timescaledb extension is installed in the connected database."""
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return row is not None


def is_hypertable(conn: psycopg.Connection[Any], table: str) -> bool:
    """True when ``table`` in the current schema is a TimescaleDB hypertable."""
    if not has_timescaledb(conn):
        return False
    row = conn.execute(
        "SELECT 1 FROM timescaledb_information.hypertables"
        " WHERE hypertable_name = %s AND hypertable_schema = current_schema()",
        (table,)).fetchone()
    return row is not None


def refresh_start_offset(retention: timedelta, width: timedelta) -> timedelta | None:
    """The ``start_offset`` of a rollup's refresh policy under a raw ``retention``.

    Decision (issue 9: "the window follows it"): TimescaleDB forgets the rollup of a region
    whose raw chunks were dropped when it refreshes that region, so the window must end
    inside the retention: ``min(REFRESH_START, retention - REFRESH_MARGIN)``. None when that
    is below the smallest window TimescaleDB accepts (``REFRESH_END`` plus two buckets):
    the view then gets no refresh policy (what it holds is kept; newer buckets are
    aggregated from the raw table at query time, real-time aggregation being on).
    """
    start = min(REFRESH_START, retention - REFRESH_MARGIN)
    return start if start >= REFRESH_END + 2 * width else None


def sync_rollup_refresh(conn: psycopg.Connection[Any], retention: timedelta) -> None:
    """Make each rollup's refresh policy follow ``retention`` (see refresh_start_offset)."""
    for view in find_rollups(conn):
        start = refresh_start_offset(retention, ROLLUP_WIDTHS[view])
        row = conn.execute(
            "SELECT (j.config ->> 'start_offset')::interval FROM timescaledb_information.jobs j"
            " JOIN timescaledb_information.continuous_aggregates c"
            # TimescaleDB 2.28 names the view itself, older versions its hypertable.
            " ON (j.hypertable_schema, j.hypertable_name) IN ("
            " (c.materialization_hypertable_schema, c.materialization_hypertable_name),"
            " (c.view_schema, c.view_name))"
            " WHERE j.proc_name = 'policy_refresh_continuous_aggregate'"
            " AND c.view_name = %s AND c.view_schema = current_schema()", (view,)).fetchone()
        current = None if row is None else row[0]
        if current == start:
            continue
        conn.execute("SELECT remove_continuous_aggregate_policy(%s::regclass, if_exists => true)",
                     (view,))
        if start is None:
            log.warning("timescaledb: METRICS_RETENTION=%s is too short to refresh %s safely;"
                        " its refresh policy is removed", retention, view)
            continue
        log.info("timescaledb: %s refreshes the last %s", view, start)
        # Its own first run, as 0005 staggers them: policies never all start together.
        conn.execute("SELECT add_continuous_aggregate_policy(%s::regclass,"
                     " start_offset => %s::interval, end_offset => %s::interval,"
                     " schedule_interval => %s::interval,"
                     " initial_start => now() + %s::interval)",
                     (view, start, REFRESH_END, min(width_schedule(view), start),
                      REFRESH_FIRST_RUN[view]))


def width_schedule(view: str) -> timedelta:
    """How often 0005 refreshes ``view``: every 30 minutes (1 h buckets) or hour (1 d)."""
    return timedelta(minutes=30) if view == "samples_1h" else timedelta(hours=1)


def sync_retention(conn: psycopg.Connection[Any], retention: timedelta,
                   table: str = "samples") -> bool:
    """Replace ``table``'s retention policy unless it already drops after ``retention``;
    for ``samples``, the rollups' refresh windows follow it (:func:`sync_rollup_refresh`).

    ``table`` is ``samples`` or ``logs`` (ValueError otherwise).
    """
    if table not in RETENTION_STARTS:
        raise ValueError(f"no retention policy for table {table!r}")
    if not is_hypertable(conn, table):
        return False
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (RETENTION_LOCK_KEY,))
        if table == "samples":
            sync_rollup_refresh(conn, retention)
        row = conn.execute(
            "SELECT (config ->> 'drop_after')::interval = %s::interval"
            " FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"
            " AND hypertable_name = %s AND hypertable_schema = current_schema()",
            (retention, table)).fetchone()
        if row is not None and row[0]:
            return True
        log.info("timescaledb: %s retention set to %s", table, retention)
        conn.execute("SELECT remove_retention_policy(%s::regclass, if_exists => true)", (table,))
        conn.execute(
            "SELECT add_retention_policy(%s::regclass, drop_after => %s::interval,"
            f" initial_start => now() + INTERVAL '{RETENTION_STARTS[table]}')",
            (table, retention))
    return True
