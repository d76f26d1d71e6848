"""PostgreSQL fleet-wide queries: every host at once, one series per host, top hosts.

Kept apart from :mod:`.postgres` so that the storage rewrite (series table, narrow samples)
can port them on their own: they read today's ``metrics`` table, with the same aggregate
allowlist, label containment filters and shaping as the per-host query. Fleet-wide queries
always read the raw points (the rollups of migration 0005 are per host and label set; the
API keeps these queries to the raw 30-day range). Without a host filter the
``(host, name, time)`` index cannot narrow the read: the BRIN index on ``time`` does.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from psycopg import sql
from psycopg_pool import ConnectionPool

from miniobserv.server.storage.base import (
    BUCKETS,
    HOST_GROUP,
    HostValue,
    MetricQuery,
    Series,
    TopQuery,
    rank_hosts,
)
from miniobserv.server.storage.postgres.db import translate_errors
from miniobserv.server.storage.postgres.metrics import AGGREGATE_SQL, _series_and_filters
from miniobserv.server.storage.shaping import to_series

# {bucket} is date_bin for bucketed queries, one constant for a whole-range aggregate (top).
_FLEET = """SELECT {series} AS series, {bucket} AS bucket, {aggregate} AS value
    FROM metrics
    WHERE name = %(name)s{host} AND time >= %(start)s AND time <= %(end)s{filters}
    GROUP BY series, bucket ORDER BY series, bucket"""
_COUNT = """SELECT count(*) FROM (SELECT DISTINCT {series} FROM metrics
    WHERE name = %(name)s{host} AND time >= %(start)s AND time <= %(end)s{filters}
    LIMIT %(limit)s) AS distinct_series"""
_DATE_BIN = sql.SQL("date_bin(make_interval(secs => %(width)s), time, TIMESTAMPTZ 'epoch')")
_WHOLE_RANGE = sql.SQL("TIMESTAMPTZ 'epoch'")
_HOST_FILTER = sql.SQL(" AND host = %(host)s")


class PostgresFleetQueries:
    """Fleet-wide reads of the ``metrics`` table over the process's connection pool."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def query(self, query: MetricQuery) -> list[Series]:
        """:meth:`PostgresMetrics.query` for ``host=None`` or ``group_by="host"``."""
        if query.agg not in AGGREGATE_SQL or query.bucket not in BUCKETS:
            raise ValueError(f"unsupported bucket/aggregate: {query.bucket!r}/{query.agg!r}")
        statement, params = _statement(_FLEET, query, bucket=_DATE_BIN,
                                       aggregate=AGGREGATE_SQL[query.agg])
        params["width"] = BUCKETS[query.bucket]
        return to_series(self._fetch(statement, params), query.group_by)

    def count_series(self, query: MetricQuery, limit: int) -> int:
        """Distinct hosts (``group_by="host"``) or ``group_by`` values, at most ``limit``."""
        if query.group_by is None:
            return 1
        statement, params = _statement(_COUNT, query)
        params["limit"] = limit
        return int(self._fetch(statement, params)[0][0])

    def top(self, query: TopQuery) -> list[HostValue]:
        """One aggregate per host over the whole range, ranked by :func:`rank_hosts`."""
        window = MetricQuery(None, query.name, query.start, query.end, agg=query.agg,
                             labels=query.labels, group_by=HOST_GROUP)
        statement, params = _statement(_FLEET, window, bucket=_WHOLE_RANGE,
                                       aggregate=AGGREGATE_SQL[query.agg])
        rows = self._fetch(statement, params)
        return rank_hosts((HostValue(host, float(value)) for host, _, value in rows), query)

    def _fetch(self, statement: sql.Composed, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        with translate_errors(), self._pool.connection() as conn:
            return conn.execute(statement, params).fetchall()


def _statement(template: str, query: MetricQuery,
               **parts: sql.Composable) -> tuple[sql.Composed, dict[str, Any]]:
    """``template`` with the series expression, host and label filters of ``query``."""
    params: dict[str, Any] = {"name": query.name, "host": query.host, "start": query.start,
                              "end": query.end}
    if query.group_by == HOST_GROUP:
        _, filters = _series_and_filters(replace(query, group_by=None), params)
        series: sql.Composable = sql.SQL("host")
    else:
        series, filters = _series_and_filters(query, params)
    host = _HOST_FILTER if query.host is not None else sql.SQL("")
    return sql.SQL(template).format(series=series, host=host, filters=filters,
                                    **parts), params
