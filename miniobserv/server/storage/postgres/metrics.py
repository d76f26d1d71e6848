"""PostgreSQL metrics: samples by series id, epoch-aligned ``date_bin`` buckets, rollups (SPEC §7).

A query resolves its series first (``series``: host, name, label containment, ``group_by``
through ``labels ->> key``), then reads their samples through the key ``(series_id, time)``,
in one statement. Buckets are ``date_bin`` aligned to the UTC epoch. Only the allowlisted
aggregate fragments below are ever formatted into SQL text, through :mod:`psycopg.sql`;
every other value is a bound parameter. ``1h`` and ``1d`` queries of the aggregates the
rollups keep read whole buckets from the continuous aggregates of migration 0007 when the
database has them. Fleet-wide queries (no host, or one series per host) are the same
statements without the host condition (:mod:`.fleetquery`).
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
    HOST_GROUP,
    PERCENTILES,
    HostValue,
    MetricQuery,
    Series,
    StorageError,
    TopQuery,
)
from miniobserv.server.storage.claims import metrics_claim
from miniobserv.server.storage.postgres import blocks
from miniobserv.server.storage.postgres.db import (
    ROLLUP_VIEWS,
    Ingest,
    find_rollups,
    read_rows,
    translate_errors,
    write_samples,
)
from miniobserv.server.storage.series import BatchSeries
from miniobserv.server.storage.shaping import containment, to_series, whole_buckets

log = logging.getLogger(__name__)

# The allowlist of aggregate SQL, keyed by base.AGGREGATES. ``last`` breaks ties between
# points of the same newest time by taking the greatest value, identically on every store
# (one sample per series and time: a tie only when several series are aggregated together).
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

# The matching series, each with its answer series ('' without group_by, the label value,
# or the host); MATERIALIZED: read once, then each part probes samples by series id.
_SERIES = """WITH s AS MATERIALIZED (SELECT id, {series} AS series FROM series
    WHERE name = %(name)s{host}{filters}) """
# One SELECT per part of the answer; the parts cover disjoint buckets, so UNION ALL joins them.
_RAW_PART = """SELECT s.series, {bucket} AS bucket, {aggregate} AS value
    FROM s JOIN samples AS x ON x.series_id = s.id
    WHERE {window}
    GROUP BY s.series, bucket"""
_ROLLUP_PART = """SELECT s.series, v.bucket, {aggregate} AS value
    FROM s JOIN {view} AS v ON v.series_id = s.id
    WHERE v.bucket >= %(first)s AND v.bucket < %(stop)s
    GROUP BY s.series, v.bucket"""
# With packed samples (plain PostgreSQL, blocks.py): each series' narrow and packed points.
_PACKED_PART = """SELECT s.series, {bucket} AS bucket, {aggregate} AS value
    FROM s CROSS JOIN LATERAL {points} AS x
    GROUP BY s.series, bucket"""
_ORDER = " ORDER BY series, bucket"
_COUNT_SERIES = """SELECT count(*) FROM (SELECT DISTINCT s.series FROM s
    WHERE EXISTS (SELECT 1 FROM {points} AS x)
    LIMIT %(limit)s) AS distinct_series"""
_NARROW_POINTS = sql.SQL("""(SELECT time, value FROM samples WHERE series_id = s.id
    AND time >= %(start)s AND time <= %(end)s)""")
_DATE_BIN = sql.SQL("date_bin(make_interval(secs => %(width)s), x.time, TIMESTAMPTZ 'epoch')")
_WHOLE_RANGE = sql.SQL("TIMESTAMPTZ 'epoch'")  # one bucket: an aggregate over the range (top)
# The raw windows: the whole query, or the partial buckets before and after the rollup's;
# the same as (low, high, high's operator) for packed samples.
_WINDOWS: Mapping[str, sql.Composable] = {
    "whole": sql.SQL("x.time >= %(start)s AND x.time <= %(end)s"),
    "head": sql.SQL("x.time >= %(start)s AND x.time < %(first)s"),
    "tail": sql.SQL("x.time >= %(stop)s AND x.time <= %(end)s")}
_PACKED_WINDOWS: Mapping[str, tuple[str, str, str]] = {
    "whole": ("start", "end", "<="), "head": ("start", "first", "<"), "tail": ("stop", "end", "<=")}

ROLLUP_AGGREGATE_SQL: Mapping[str, sql.Composable] = {
    "avg": sql.SQL("sum(sum) / sum(count)::double precision"),
    "min": sql.SQL("min(min)"),
    "max": sql.SQL("max(max)"),
    "sum": sql.SQL("sum(sum)"),
    "count": sql.SQL("sum(count)::bigint"),
    "last": sql.SQL("(array_agg(last_value ORDER BY last_time DESC, last_value DESC))[1]"),
}
# 0007's retention policy keeps rollups at least this long; older starts are answered raw.
ROLLUP_RETENTION = timedelta(days=400)


class PostgresMetrics:
    """Metrics in ``series`` and ``samples`` (a hypertable when TimescaleDB is present).

    ``1h`` and ``1d`` queries of the aggregates the rollups keep read whole buckets from the
    continuous aggregates of migration 0007 when this database has them (looked up once).
    """

    def __init__(self, ingest: Ingest) -> None:
        self._ingest = ingest
        self._pool = ingest.pool
        self._rollups: frozenset[str] | None = None  # the rollup views found, once known
        self._packed: bool | None = None  # whether samples are packed (blocks.py), once known

    def insert_batch(self, batch: MetricBatch) -> int:
        """Store the batch (one statement in the steady state), or acknowledge a known
        ``batch_id``."""
        series = BatchSeries.of(batch)
        write_samples(self._ingest, metrics_claim(batch, series.columns), batch.host, series)
        return len(batch.metrics)

    def query(self, query: MetricQuery) -> list[Series]:
        """Epoch-aligned buckets over ``start <= time <= end``, ascending, empty ones omitted."""
        view = ROLLUP_VIEWS[query.bucket] if self.serves_from_rollup(query) else None
        try:
            rows = self._fetch(*build_query(query, view, packed=self.packed()))
        except StorageError as err:
            if view is None or not isinstance(err.__cause__, psycopg.errors.UndefinedTable):
                raise
            log.warning("rollup %s is gone; answering from the raw table", view)
            self._rollups = None  # look again next time
            rows = self._fetch(*build_query(query, packed=self.packed()))
        return to_series(rows, query.group_by)

    def count_series(self, query: MetricQuery, limit: int) -> int:
        """Distinct ``group_by`` values (hosts for ``group_by="host"``) of the series with
        points in the range, at most ``limit``."""
        if query.group_by is None:
            return 1
        params: dict[str, Any] = {"start": query.start, "end": query.end, "limit": limit}
        points = blocks.points(sql.SQL("s.id"), "start", "end") if self.packed() else \
            _NARROW_POINTS
        statement = sql.Composed([series_cte(query, params),
                                  sql.SQL(_COUNT_SERIES).format(points=points)])
        return int(self._fetch(statement, params)[0][0])

    def serves_from_rollup(self, query: MetricQuery) -> bool:
        """True when ``query`` is answered from a rollup: a ``1h``/``1d`` bucket, an aggregate
        the rollups keep, a rollup in this database, and a start within their retention.
        Never for fleet-wide queries (the API keeps them to the raw range)."""
        if query.is_fleet_wide or query.bucket not in ROLLUP_VIEWS or \
                query.agg not in ROLLUP_AGGREGATE_SQL:
            return False
        if query.start < datetime.now(UTC) - ROLLUP_RETENTION:
            return False
        return ROLLUP_VIEWS[query.bucket] in self._available_rollups()

    def top(self, query: TopQuery) -> list[HostValue]:
        """The hosts of the highest (or lowest) aggregate over the range."""
        from miniobserv.server.storage.postgres.fleetquery import top  # imports this module

        return top(self._fetch, query, packed=self.packed())

    def packed(self) -> bool:
        """True when this database packs old samples into blocks (looked up once)."""
        if self._packed is None:
            with translate_errors(), self._pool.connection() as conn:
                self._packed = blocks.uses_blocks(conn)
        return self._packed

    def _available_rollups(self) -> frozenset[str]:
        if self._rollups is None:
            with translate_errors(), self._pool.connection() as conn:
                self._rollups = find_rollups(conn)
        return self._rollups

    def _fetch(self, statement: sql.Composed, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return read_rows(self._pool, statement, params)

    def hosts(self) -> list[str]:
        """Every host that sent an accepted batch, in code-point order (as on SQLite)."""
        with translate_errors(), self._pool.connection() as conn:
            rows = conn.execute("SELECT host FROM hosts").fetchall()
        return sorted(row[0] for row in rows)


def build_query(query: MetricQuery, view: str | None = None,
                bucket: sql.Composable = _DATE_BIN, *,
                packed: bool = False) -> tuple[sql.Composed, dict[str, Any]]:
    """The SQL and parameters of ``query``; only allowlisted fragments are formatted in.

    With ``view`` (a value of ROLLUP_VIEWS for ``query.bucket``), the buckets lying wholly
    inside ``[start, end]`` come from that rollup and the partial first and last buckets from
    the raw samples, which alone can cut them at ``start`` and ``end``. ``bucket`` is the
    bucket expression (``date_bin``, or one constant for a whole-range aggregate). With
    ``packed``, the raw samples are the narrow and packed points of each series (blocks.py).
    """
    if query.agg not in AGGREGATE_SQL or query.bucket not in BUCKETS:
        raise ValueError(f"unsupported bucket/aggregate: {query.bucket!r}/{query.agg!r}")
    params: dict[str, Any] = {"width": BUCKETS[query.bucket], "start": query.start,
                              "end": query.end}
    head = series_cte(query, params)

    def raw(bounds: str) -> sql.Composed:
        if packed:
            return sql.SQL(_PACKED_PART).format(
                bucket=bucket, aggregate=AGGREGATE_SQL[query.agg],
                points=blocks.points(sql.SQL("s.id"), *_PACKED_WINDOWS[bounds]))
        return sql.SQL(_RAW_PART).format(bucket=bucket, aggregate=AGGREGATE_SQL[query.agg],
                                         window=_WINDOWS[bounds])

    window = whole_buckets(query)
    if view is None or window is None:
        return sql.Composed([head, raw("whole"), sql.SQL(_ORDER)]), params
    if view != ROLLUP_VIEWS.get(query.bucket) or query.agg not in ROLLUP_AGGREGATE_SQL:
        raise ValueError(f"no rollup {view!r} for {query.bucket!r}/{query.agg!r}")
    params["first"], params["stop"] = window
    parts = [sql.SQL(_ROLLUP_PART).format(view=sql.Identifier(view),
                                          aggregate=ROLLUP_AGGREGATE_SQL[query.agg])]
    if query.start < window[0]:
        parts.append(raw("head"))
    if window[1] <= query.end:
        parts.append(raw("tail"))
    return sql.Composed([head, sql.SQL(" UNION ALL ").join(parts), sql.SQL(_ORDER)]), params


def whole_range(query: MetricQuery, *,
                packed: bool = False) -> tuple[sql.Composed, dict[str, Any]]:
    """:func:`build_query` with one bucket for the whole range (no bucketing)."""
    return build_query(query, bucket=_WHOLE_RANGE, packed=packed)


def series_cte(query: MetricQuery, params: dict[str, Any]) -> sql.Composed:
    """``WITH s AS (...)``: the series of ``query`` (name, host unless fleet-wide, label
    containment, ``group_by``) as ``(id, series)``; adds their parameters to ``params``."""
    params["name"] = query.name
    host = sql.SQL("")
    if query.host is not None:
        params["host"] = query.host
        host = sql.SQL(" AND host = %(host)s")
    filters: list[sql.Composable] = []
    for index, (key, value) in enumerate(query.labels):
        params[f"label{index}"] = containment(key, value)
        filters.append(sql.SQL(" AND labels @> {}::jsonb").format(sql.Placeholder(f"label{index}")))
    series: sql.Composable = sql.SQL("''")
    if query.group_by == HOST_GROUP:
        series = sql.SQL("host")
    elif query.group_by is not None:
        params["group"] = query.group_by
        series = sql.SQL("labels ->> %(group)s")
        filters.append(sql.SQL(" AND labels ? %(group)s"))
    return sql.SQL(_SERIES).format(series=series, host=host, filters=sql.Composed(filters))
