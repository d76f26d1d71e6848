"""SQLite fleet-wide queries: every host at once, one series per host, top hosts.

The per-host query's statements (:func:`.metrics.read_rows`: the matching series first, then
their samples by key range) without the host condition: the series of one metric name are
found by reading the ``series`` table (one row per series, not per point), grouped by host
for ``group_by="host"``. A top query is the same statements with the whole range as one
bucket.
"""

from __future__ import annotations

from miniobserv.server.storage.base import (
    HOST_GROUP,
    HostValue,
    MetricQuery,
    Series,
    TopQuery,
    rank_hosts,
)
from miniobserv.server.storage.shaping import to_series
from miniobserv.server.storage.sqlite.db import SQLiteDatabase, from_micros
from miniobserv.server.storage.sqlite.metrics import (
    BUCKET,
    WHOLE_RANGE,
    check,
    count_series,
    is_answerable,
    read_rows,
)


class SQLiteFleetQueries:
    """Fleet-wide reads of the ``series`` and ``samples`` tables of a SQLite file."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    def query(self, query: MetricQuery) -> list[Series]:
        """:meth:`SQLiteMetrics.query` for ``host=None`` or ``group_by="host"``."""
        check(query)
        if not is_answerable(query):
            return to_series([], query.group_by, from_micros)
        with self._db.read() as conn:
            return to_series(read_rows(conn, query, BUCKET), query.group_by, from_micros)

    def count_series(self, query: MetricQuery, limit: int) -> int:
        """Distinct hosts (``group_by="host"``) or ``group_by`` values, at most ``limit``."""
        return count_series(self._db, query, limit)

    def top(self, query: TopQuery) -> list[HostValue]:
        """One aggregate per host over the whole range, ranked by :func:`rank_hosts`."""
        window = MetricQuery(None, query.name, query.start, query.end, agg=query.agg,
                             labels=query.labels, group_by=HOST_GROUP)
        if not is_answerable(window):
            return []
        with self._db.read() as conn:
            rows = read_rows(conn, window, WHOLE_RANGE)
        return rank_hosts((HostValue(host, float(value)) for host, _, value in rows), query)
