"""SQLite fleet-wide queries: every host at once, one series per host, top hosts.

Kept apart from :mod:`.sqlite` so that the storage rewrite (series table, narrow samples)
can port them on their own: they read today's ``metrics`` table with the per-host query's
own statements (aggregates in SQL, ``last`` by ``row_number()``, percentiles in Python), only
with another series expression and without the host condition. A top query is the same
statements with the whole range as one bucket.
"""

from __future__ import annotations

from typing import Any

from miniobserv.model import is_label_key
from miniobserv.server.storage.base import (
    BUCKETS,
    HOST_GROUP,
    PERCENTILES,
    HostValue,
    MetricQuery,
    Series,
    TopQuery,
    rank_hosts,
)
from miniobserv.server.storage.shaping import to_series
from miniobserv.server.storage.sqlite.db import SQLiteDatabase, from_micros
from miniobserv.server.storage.sqlite.metrics import (
    _AGGREGATED,
    _BUCKET,
    _LAST,
    _VALUES,
    AGGREGATE_SQL,
    _percentiles,
    _where,
)

_COUNT = "SELECT count(*) FROM (SELECT DISTINCT {series} FROM metrics WHERE {where} LIMIT :limit)"
_WHOLE_RANGE = "0"  # the bucket expression of a whole-range aggregate


class SQLiteFleetQueries:
    """Fleet-wide reads of the ``metrics`` table of a SQLite file."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    def query(self, query: MetricQuery) -> list[Series]:
        """:meth:`SQLiteMetrics.query` for ``host=None`` or ``group_by="host"``."""
        if query.agg not in AGGREGATE_SQL or query.bucket not in BUCKETS:
            raise ValueError(f"unsupported bucket/aggregate: {query.bucket!r}/{query.agg!r}")
        if not _is_answerable(query):
            return to_series([], query.group_by, from_micros)
        return to_series(self._rows(query, _BUCKET), query.group_by, from_micros)

    def count_series(self, query: MetricQuery, limit: int) -> int:
        """Distinct hosts (``group_by="host"``) or ``group_by`` values, at most ``limit``."""
        if query.group_by is None:
            return 1
        if not _is_answerable(query):
            return 0
        where, params = _where(query)
        with self._db.read() as conn:
            row = conn.execute(_COUNT.format(series=_series(query), where=where),
                               {**params, "limit": limit}).fetchone()
        return int(row[0])

    def top(self, query: TopQuery) -> list[HostValue]:
        """One aggregate per host over the whole range, ranked by :func:`rank_hosts`."""
        window = MetricQuery(None, query.name, query.start, query.end, agg=query.agg,
                             labels=query.labels, group_by=HOST_GROUP)
        if not _is_answerable(window):
            return []
        rows = self._rows(window, _WHOLE_RANGE)
        return rank_hosts((HostValue(host, float(value)) for host, _, value in rows), query)

    def _rows(self, query: MetricQuery, bucket: str) -> list[tuple[Any, ...]]:
        """``(series, bucket, value)`` rows sorted by series and bucket."""
        where, params = _where(query)
        parts = {"series": _series(query), "bucket": bucket, "where": where}
        with self._db.read() as conn:
            if query.agg in PERCENTILES:
                rows = conn.execute(_VALUES.format(**parts), params)
                return list(_percentiles(rows, PERCENTILES[query.agg]))
            template = _LAST if query.agg == "last" else _AGGREGATED
            statement = template.format(aggregate=AGGREGATE_SQL[query.agg], **parts)
            return conn.execute(statement, params).fetchall()


def _is_answerable(query: MetricQuery) -> bool:
    """False when a filter or group_by names a key no stored label can have."""
    return all(is_label_key(key) for key, _ in query.labels) and \
        (query.group_by is None or is_label_key(query.group_by))


def _series(query: MetricQuery) -> str:
    if query.group_by == HOST_GROUP:
        return "host"
    return "''" if query.group_by is None else "json_extract(labels, :group)"
