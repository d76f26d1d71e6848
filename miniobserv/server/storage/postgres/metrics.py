"""PostgreSQL metrics: COPY per batch, epoch-aligned ``date_bin`` buckets, rollups (SPEC §7).

Queries bucket with ``date_bin`` aligned to the UTC epoch. Only the allowlisted aggregate
fragments below are ever formatted into SQL text, through :mod:`psycopg.sql`; every other
value is a bound parameter. ``1h`` and ``1d`` queries of the aggregates the rollups keep read
whole buckets from the continuous aggregates of migration 0005 when the database has them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from miniobserv.model import MetricBatch
from miniobserv.server.storage.base import (
    AGGREGATES,
    BUCKETS,
    PERCENTILES,
    HostValue,
    MetricQuery,
    Series,
    StorageError,
    TopQuery,
    labels_text,
)
from miniobserv.server.storage.claims import metrics_claim
from miniobserv.server.storage.postgres.db import (
    ROLLUP_VIEWS,
    Ingest,
    copy_batch,
    find_rollups,
    translate_errors,
)
from miniobserv.server.storage.series import batch_series
from miniobserv.server.storage.shaping import containment, to_series, whole_buckets

log = logging.getLogger(__name__)

_COPY_METRICS = "COPY metrics (time, host, name, value, labels) FROM STDIN"

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

class PostgresMetrics:
    """Metrics in the ``metrics`` table (a hypertable when TimescaleDB is present).

    ``1h`` and ``1d`` queries of the aggregates the rollups keep read whole buckets from the
    continuous aggregates of migration 0005 when this database has them (looked up once).
    """

    def __init__(self, ingest: Ingest) -> None:
        self._ingest = ingest
        self._pool = ingest.pool
        self._rollups: frozenset[str] | None = None  # the rollup views found, once known
        from miniobserv.server.storage.postgres.fleetquery import (  # imports this module
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
        Never for fleet-wide queries (:mod:`.fleetquery` reads raw points)."""
        if query.is_fleet_wide or query.bucket not in ROLLUP_VIEWS or \
                query.agg not in ROLLUP_AGGREGATE_SQL:
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
        params[f"label{index}"] = containment(key, value)
        filters.append(sql.SQL(" AND labels @> {}::jsonb").format(sql.Placeholder(f"label{index}")))
    series: sql.Composable = sql.SQL("''")
    if query.group_by is not None:
        params["group"] = query.group_by
        series = sql.SQL("labels ->> %(group)s")
        filters.append(sql.SQL(" AND labels ? %(group)s"))
    return series, sql.Composed(filters)


