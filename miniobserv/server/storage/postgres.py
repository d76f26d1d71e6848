"""PostgreSQL repositories: psycopg 3 with a psycopg_pool connection pool (SPEC §7).

Open the pool after gunicorn's fork (``open_repositories`` runs in each worker) and close it
at exit. Writes are ``COPY ... FROM STDIN`` inside one transaction per batch; queries bucket
with ``date_bin`` aligned to the UTC epoch. Only the allowlisted aggregate fragments below are
ever formatted into SQL text, through :mod:`psycopg.sql`; every other value is a bound
parameter. Connection failures become :class:`StorageUnavailable` (the API answers 503).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from miniobserv.model import MetricBatch
from miniobserv.server.storage.base import (
    AGGREGATES,
    BUCKETS,
    EPOCH,
    MICROSECOND,
    PERCENTILES,
    HostValue,
    MetricQuery,
    Point,
    Series,
    StorageError,
    StorageUnavailable,
    TopQuery,
    labels_text,
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

CONNECT_TIMEOUT_S = 3  # per connection attempt: a dead database answers quickly
POOL_TIMEOUT_S = 5.0  # how long a request waits for a pooled connection before 503
PING_TIMEOUT_S = 1.0  # /readyz answers within about this long when the database is down
# A reconnection attempt gives up after this long; the next request starts a fresh one. Keeps
# the pool's exponential backoff short, so service resumes soon after a long outage.
RECONNECT_TIMEOUT_S = 10.0
RETENTION_LOCK_KEY = 0x6D696E696F6274  # serialises retention-policy changes across workers
# Each table's retention policy first runs at its own offset, as its migration set it, clear
# of every other policy's first run (0001: metrics; 0002: logs).
RETENTION_STARTS: Mapping[str, str] = {"metrics": "1 hour 17 minutes", "logs": "1 hour 43 minutes"}

# The allowlist of aggregate SQL, keyed by base.AGGREGATES. ``last`` breaks ties between
# points of the same newest time by taking the greatest value, identically on every store.
AGGREGATE_SQL: Mapping[str, sql.Composable] = {
    "avg": sql.SQL("avg(value)"),
    "min": sql.SQL("min(value)"),
    "max": sql.SQL("max(value)"),
    "sum": sql.SQL("sum(value)"),
    "count": sql.SQL("count(*)"),
    "last": sql.SQL("(array_agg(value ORDER BY time DESC, value DESC))[1]"),
    **{name: sql.SQL("percentile_cont({}) WITHIN GROUP (ORDER BY value)").format(
        sql.Literal(fraction)) for name, fraction in PERCENTILES.items()},
}
assert set(AGGREGATE_SQL) == set(AGGREGATES), "every aggregate needs its SQL"

_CLAIM_BATCH = """INSERT INTO ingested_batches (batch_id, kind, received_at, digest)
    VALUES (%s, %s, %s, %s) ON CONFLICT (batch_id, kind) DO NOTHING"""
_CLAIMED_DIGEST = "SELECT digest FROM ingested_batches WHERE batch_id = %s AND kind = %s"
_COPY_METRICS = "COPY metrics (time, host, name, value, labels) FROM STDIN"
_TOUCH_HOST = """INSERT INTO hosts (host, last_seen) VALUES (%s, %s)
    ON CONFLICT (host) DO UPDATE SET last_seen = greatest(hosts.last_seen, excluded.last_seen)"""
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
        last_seen = greatest(series.last_seen, excluded.last_seen)"""
# One SELECT per part of the answer; the parts cover disjoint buckets, so UNION ALL joins them.
_RAW_PART = """SELECT {series} AS series,
        date_bin(make_interval(secs => %(width)s), time, TIMESTAMPTZ 'epoch') AS bucket,
        {aggregate} AS value
    FROM metrics
    WHERE host = %(host)s AND name = %(name)s AND {window}{filters}
    GROUP BY series, bucket"""
_ROLLUP_PART = """SELECT {series} AS series, bucket, {aggregate} AS value
    FROM {view}
    WHERE host = %(host)s AND name = %(name)s AND bucket >= %(first)s AND bucket < %(stop)s{filters}
    GROUP BY series, bucket"""
_ORDER = " ORDER BY series, bucket"
_COUNT_SERIES = """SELECT count(*) FROM (SELECT DISTINCT {series} FROM metrics
    WHERE host = %(host)s AND name = %(name)s AND time >= %(start)s AND time <= %(end)s{filters}
    LIMIT %(limit)s) AS distinct_series"""
# The raw windows: the whole query, or the partial buckets before and after the rollup's.
_WHOLE = sql.SQL("time >= %(start)s AND time <= %(end)s")
_HEAD = sql.SQL("time >= %(start)s AND time < %(first)s")
_TAIL = sql.SQL("time >= %(stop)s AND time <= %(end)s")

# Continuous aggregates of migration 0005 by bucket, and how each aggregate is computed from
# their rows (several per bucket when several label sets match). Both read the raw table, so
# min, max, count and last equal the raw query's exactly; sum and avg add the same values,
# maybe in another order (equal up to float rounding; exactly when the sums are exact).
ROLLUP_VIEWS: Mapping[str, str] = {"1h": "metrics_1h", "1d": "metrics_1d"}
ROLLUP_AGGREGATE_SQL: Mapping[str, sql.Composable] = {
    "avg": sql.SQL("sum(sum) / sum(count)::double precision"),
    "min": sql.SQL("min(min)"),
    "max": sql.SQL("max(max)"),
    "sum": sql.SQL("sum(sum)"),
    "count": sql.SQL("sum(count)::bigint"),
    "last": sql.SQL("(array_agg(last_value ORDER BY last_time DESC, last_value DESC))[1]"),
}
# 0005's retention policy keeps rollups at least this long; older starts are answered raw.
ROLLUP_RETENTION = timedelta(days=400)
# 0005's refresh policies: each view refreshes [now - start_offset, now - REFRESH_END].
ROLLUP_WIDTHS: Mapping[str, timedelta] = {"metrics_1h": timedelta(hours=1),
                                          "metrics_1d": timedelta(days=1)}
REFRESH_START = timedelta(days=3)
REFRESH_END = timedelta(hours=1)
REFRESH_MARGIN = timedelta(hours=1)  # the window ends this far inside the raw retention


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
    the ``COPY ... FROM STDIN`` of ``rows``; ``series`` the batch's series keys (metrics
    only; see :func:`~miniobserv.server.storage.series.admit`). A ``batch_id`` claimed
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

    def upsert_series(self, host: str, keys: Sequence[SeriesKey], now: datetime) -> None:
        self._conn.execute(_UPSERT_SERIES, {"host": host, "now": now,
                                            "names": [key[0] for key in keys],
                                            "texts": [key[1] for key in keys]})

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


class PostgresMetrics:
    """Metrics in the ``metrics`` table (a hypertable when TimescaleDB is present).

    ``1h`` and ``1d`` queries of the aggregates the rollups keep read whole buckets from the
    continuous aggregates of migration 0005 when this database has them (looked up once).
    """

    def __init__(self, ingest: Ingest) -> None:
        self._ingest = ingest
        self._pool = ingest.pool
        self._rollups: frozenset[str] | None = None  # the rollup views found, once known
        from miniobserv.server.storage.postgres_fleetquery import (  # imports this module
            PostgresFleetQueries,
        )

        self._fleet_queries = PostgresFleetQueries(self._pool)

    def insert_batch(self, batch: MetricBatch) -> int:
        """Store the batch in one transaction (COPY), or acknowledge a known ``batch_id``."""
        rows = ((m.time, m.host, m.name, m.value, labels_text(m.labels)) for m in batch.metrics)
        copy_batch(self._ingest, metrics_claim(batch), batch.host, _COPY_METRICS, rows,
                   batch_series(batch))
        return len(batch.metrics)

    def query(self, query: MetricQuery) -> list[Series]:
        """Epoch-aligned buckets over ``start <= time <= end``, ascending, empty ones omitted."""
        if query.is_fleet_wide:
            return self._fleet_queries.query(query)
        view = ROLLUP_VIEWS[query.bucket] if self.serves_from_rollup(query) else None
        try:
            rows = self._fetch(*build_query(query, view))
        except StorageError as err:
            if view is None or not isinstance(err.__cause__, psycopg.errors.UndefinedTable):
                raise
            log.warning("rollup %s is gone; answering from the raw table", view)
            self._rollups = None  # look again next time
            rows = self._fetch(*build_query(query))
        return to_series(rows, query.group_by)

    def count_series(self, query: MetricQuery, limit: int) -> int:
        """Distinct ``group_by`` values of the matching raw points, at most ``limit``."""
        if query.is_fleet_wide:
            return self._fleet_queries.count_series(query, limit)
        if query.group_by is None:
            return 1
        params: dict[str, Any] = {"host": query.host, "name": query.name,
                                  "start": query.start, "end": query.end, "limit": limit}
        series, filters = _series_and_filters(query, params)
        statement = sql.SQL(_COUNT_SERIES).format(series=series, filters=filters)
        return int(self._fetch(statement, params)[0][0])

    def serves_from_rollup(self, query: MetricQuery) -> bool:
        """True when ``query`` is answered from a rollup: a ``1h``/``1d`` bucket, an aggregate
        the rollups keep, a rollup in this database, and a start within their retention.
        Never for fleet-wide queries (:mod:`.postgres_fleetquery` reads raw points)."""
        if query.is_fleet_wide or query.bucket not in ROLLUP_VIEWS or query.agg not in ROLLUP_AGGREGATE_SQL:
            return False
        if query.start < datetime.now(UTC) - ROLLUP_RETENTION:
            return False
        return ROLLUP_VIEWS[query.bucket] in self._available_rollups()

    def top(self, query: TopQuery) -> list[HostValue]:
        """The hosts of the highest (or lowest) aggregate over the range."""
        return self._fleet_queries.top(query)

    def _available_rollups(self) -> frozenset[str]:
        if self._rollups is None:
            with translate_errors(), self._pool.connection() as conn:
                self._rollups = find_rollups(conn)
        return self._rollups

    def _fetch(self, statement: sql.Composed, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        with translate_errors(), self._pool.connection() as conn:
            return conn.execute(statement, params).fetchall()

    def hosts(self) -> list[str]:
        """Every host that sent an accepted batch, in code-point order (as on SQLite)."""
        with translate_errors(), self._pool.connection() as conn:
            rows = conn.execute("SELECT host FROM hosts").fetchall()
        return sorted(row[0] for row in rows)


def find_rollups(conn: psycopg.Connection[Any]) -> frozenset[str]:
    """The rollup views (continuous aggregates of ROLLUP_VIEWS) of the current schema."""
    if not has_timescaledb(conn):
        return frozenset()
    rows = conn.execute(
        "SELECT view_name FROM timescaledb_information.continuous_aggregates"
        " WHERE view_schema = current_schema() AND view_name = ANY(%s)",
        (list(ROLLUP_VIEWS.values()),)).fetchall()
    return frozenset(row[0] for row in rows)


def build_query(query: MetricQuery, view: str | None = None) -> tuple[sql.Composed, dict[str, Any]]:
    """The SQL and parameters of ``query``; only allowlisted fragments are formatted in.

    With ``view`` (a value of ROLLUP_VIEWS for ``query.bucket``), the buckets lying wholly
    inside ``[start, end]`` come from that rollup and the partial first and last buckets from
    the raw table, which alone can cut them at ``start`` and ``end``.
    """
    if query.agg not in AGGREGATE_SQL or query.bucket not in BUCKETS:
        raise ValueError(f"unsupported bucket/aggregate: {query.bucket!r}/{query.agg!r}")
    params: dict[str, Any] = {"width": BUCKETS[query.bucket], "host": query.host,
                              "name": query.name, "start": query.start, "end": query.end}
    series, filters = _series_and_filters(query, params)

    def raw(bounds: sql.Composable) -> sql.Composed:
        return sql.SQL(_RAW_PART).format(series=series, aggregate=AGGREGATE_SQL[query.agg],
                                         filters=filters, window=bounds)

    window = whole_buckets(query)
    if view is None or window is None:
        return sql.Composed([raw(_WHOLE), sql.SQL(_ORDER)]), params
    if view != ROLLUP_VIEWS.get(query.bucket) or query.agg not in ROLLUP_AGGREGATE_SQL:
        raise ValueError(f"no rollup {view!r} for {query.bucket!r}/{query.agg!r}")
    params["first"], params["stop"] = window
    parts = [sql.SQL(_ROLLUP_PART).format(series=series, view=sql.Identifier(view),
                                          aggregate=ROLLUP_AGGREGATE_SQL[query.agg],
                                          filters=filters)]
    if query.start < window[0]:
        parts.append(raw(_HEAD))
    if window[1] <= query.end:
        parts.append(raw(_TAIL))
    return sql.Composed([sql.SQL(" UNION ALL ").join(parts), sql.SQL(_ORDER)]), params


def _series_and_filters(query: MetricQuery,
                        params: dict[str, Any]) -> tuple[sql.Composable, sql.Composed]:
    """The series expression and the label conditions of ``query``; adds their parameters."""
    filters: list[sql.Composable] = []
    for index, (key, value) in enumerate(query.labels):
        # One containment test per pair: in a single jsonb object a repeated key would
        # collapse, and ``label=k:a&label=k:b`` must match nothing.
        params[f"label{index}"] = json.dumps({key: value})
        filters.append(sql.SQL(" AND labels @> {}::jsonb").format(sql.Placeholder(f"label{index}")))
    series: sql.Composable = sql.SQL("''")
    if query.group_by is not None:
        params["group"] = query.group_by
        series = sql.SQL("labels ->> %(group)s")
        filters.append(sql.SQL(" AND labels ? %(group)s"))
    return series, sql.Composed(filters)


def whole_buckets(query: MetricQuery) -> tuple[datetime, datetime] | None:
    """``(first, stop)``: the buckets starting in ``[first, stop)`` lie wholly inside
    ``[start, end]``; None when there is no such bucket."""
    width = timedelta(seconds=query.bucket_seconds)
    first = bucket_floor(query.start, width)
    if first < query.start:
        first += width
    stop = bucket_floor(query.end + MICROSECOND, width)  # end is inclusive
    return (first, stop) if first < stop else None


def bucket_floor(time: datetime, width: timedelta) -> datetime:
    """The start of the epoch-aligned bucket of ``width`` holding ``time`` (exact integers)."""
    return EPOCH + (time - EPOCH) // width * width


def to_series(rows: Sequence[tuple[Any, ...]], group_by: str | None) -> list[Series]:
    """Shape ``(series, bucket, value)`` rows, sorted by series then bucket, into Series."""
    grouped: dict[str, list[Point]] = {}
    for key, bucket, value in rows:
        grouped.setdefault(key, []).append(Point(bucket.astimezone(UTC), float(value)))
    if group_by is None:
        return [Series(labels={}, points=grouped.get("", []))]
    # Sorted here, not by the database's collation, so every store orders alike.
    return [Series(labels={group_by: key}, points=grouped[key]) for key in sorted(grouped)]


class PostgresRepositories:
    """Every PostgreSQL repository of one process, sharing one connection pool.

    ``statement_timeout`` (the server's ``REQUEST_TIMEOUT``) cuts any query of a pooled
    connection running longer: the repository raises StorageUnavailable and the API answers
    503. Work that may rightly take longer runs inside :meth:`unbounded_statements`.
    Migrations use connections of their own and are never cut.
    """

    def __init__(self, database_url: str, *, min_size: int = 1, max_size: int = 10,
                 statement_timeout: timedelta | None = None,
                 limits: Limits | None = None) -> None:
        self._statement_timeout_ms = None if statement_timeout is None else \
            max(1, round(statement_timeout.total_seconds() * 1000))
        self._unbounded = threading.local()
        self.pool = ConnectionPool(
            database_url, min_size=min_size, max_size=max_size, open=False,
            timeout=POOL_TIMEOUT_S, reconnect_timeout=RECONNECT_TIMEOUT_S,
            check=self._check_out, kwargs=pool_kwargs(database_url), name="miniobserv")
        ingest = Ingest(self.pool, limits or Limits())
        self.metrics = PostgresMetrics(ingest)
        from miniobserv.server.storage.postgres_fleet import PostgresFleet  # imports this module

        self.fleet = PostgresFleet(self.pool, database_url)
        from miniobserv.server.storage.postgres_logs import PostgresLogs  # imports this module

        self.logs = PostgresLogs(ingest)

    def open(self) -> PostgresRepositories:
        """Open the pool without waiting: the server starts even while the database is down."""
        self.pool.open(wait=False)
        return self

    def _check_out(self, conn: psycopg.Connection[Any]) -> None:
        """The pool's check at each checkout: one round trip proves the connection alive
        and sets its statement_timeout for the calling thread (0, none, when unbounded)."""
        if self._statement_timeout_ms is None:
            ConnectionPool.check_connection(conn)
            return
        timeout_ms = 0 if getattr(self._unbounded, "active", False) else \
            self._statement_timeout_ms
        autocommit = conn.autocommit
        conn.autocommit = True  # a session setting, outside any transaction
        try:
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (f"{timeout_ms}ms",))
        finally:
            if not autocommit and not conn.closed:
                conn.autocommit = False

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

    def sync_retention(self, retention: timedelta, table: str = "metrics") -> bool:
        """Make TimescaleDB's retention policy on ``table`` drop chunks past ``retention``.

        Returns False (and changes nothing) without TimescaleDB: the maintenance job then
        enforces retention. Safe to call from several workers at once.
        """
        with translate_errors(), self.pool.connection() as conn:
            return sync_retention(conn, retention, table)

    def close(self) -> None:
        self.pool.close()


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
            " ON j.hypertable_schema = c.materialization_hypertable_schema"
            " AND j.hypertable_name = c.materialization_hypertable_name"
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
        conn.execute("SELECT add_continuous_aggregate_policy(%s::regclass,"
                     " start_offset => %s::interval, end_offset => %s::interval,"
                     " schedule_interval => %s::interval)",
                     (view, start, REFRESH_END, min(width_schedule(view), start)))


def width_schedule(view: str) -> timedelta:
    """How often 0005 refreshes ``view``: every 30 minutes (1 h buckets) or hour (1 d)."""
    return timedelta(minutes=30) if view == "metrics_1h" else timedelta(hours=1)


def sync_retention(conn: psycopg.Connection[Any], retention: timedelta,
                   table: str = "metrics") -> bool:
    """Replace ``table``'s retention policy unless it already drops after ``retention``;
    for ``metrics``, the rollups' refresh windows follow it (:func:`sync_rollup_refresh`).

    ``table`` is ``metrics`` or ``logs`` (ValueError otherwise).
    """
    if table not in RETENTION_STARTS:
        raise ValueError(f"no retention policy for table {table!r}")
    if not is_hypertable(conn, table):
        return False
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (RETENTION_LOCK_KEY,))
        if table == "metrics":
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
