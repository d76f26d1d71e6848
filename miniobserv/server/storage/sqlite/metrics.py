"""SQLite metrics: integer-microsecond buckets, percentiles in Python (SPEC §7).

Times are INTEGER microseconds since the UTC epoch, so bucketing is exact integer arithmetic
and answers match PostgreSQL's ``date_bin``. ``sum/avg/min/max/count`` and ``last`` run in
SQL; percentiles are computed in Python exactly as PostgreSQL's ``percentile_cont`` does.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from miniobserv.model import MetricBatch, is_label_key
from miniobserv.server.storage.base import (
    AGGREGATES,
    BUCKETS,
    HOST_GROUP,
    PERCENTILES,
    HostValue,
    MetricQuery,
    Series,
    TopQuery,
    labels_text,
    to_micros,
)
from miniobserv.server.storage.claims import metrics_claim
from miniobserv.server.storage.series import batch_series
from miniobserv.server.storage.shaping import json_path, percentile_cont, to_series
from miniobserv.server.storage.sqlite.db import SQLiteDatabase, from_micros, insert_batch

_INSERT = "INSERT INTO metrics (time, host, name, value, labels) VALUES (?, ?, ?, ?, ?)"

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
class SQLiteMetrics:
    """Metrics in the ``metrics`` table of a SQLite file."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db
        from miniobserv.server.storage.sqlite.fleetquery import (  # imports this module
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
            return to_series([], query.group_by, from_micros)  # no stored label has such a key
        where, params = _where(query)
        series = "json_extract(labels, :group)" if query.group_by else "''"
        parts = {"series": series, "bucket": _BUCKET, "where": where}
        with self._db.read() as conn:
            if query.agg in PERCENTILES:
                rows = conn.execute(_VALUES.format(**parts), params)
                return to_series(_percentiles(rows, PERCENTILES[query.agg]), query.group_by,
                                 from_micros)
            template = _LAST if query.agg == "last" else _AGGREGATED
            statement = template.format(aggregate=AGGREGATE_SQL[query.agg], **parts)
            return to_series(conn.execute(statement, params).fetchall(), query.group_by,
                             from_micros)

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


def _where(query: MetricQuery) -> tuple[str, dict[str, Any]]:
    """The conditions of ``query`` and their parameters; no host condition for ``host=None``,
    no label condition for ``group_by="host"`` (fleet-wide queries, :mod:`.fleetquery`)."""
    params: dict[str, Any] = {"width": query.bucket_seconds * 1_000_000, "host": query.host,
                              "name": query.name, "start": to_micros(query.start),
                              "end": to_micros(query.end)}
    clauses = ["host = :host"] if query.host is not None else []
    clauses += ["name = :name", "time >= :start", "time <= :end"]
    for index, (key, value) in enumerate(query.labels):
        params[f"key{index}"], params[f"value{index}"] = json_path(key), value
        clauses.append(f"json_extract(labels, :key{index}) = :value{index}")
    if query.group_by is not None and query.group_by != HOST_GROUP:
        params["group"] = json_path(query.group_by)
        clauses.append("json_extract(labels, :group) IS NOT NULL")
    return " AND ".join(clauses), params


def _percentiles(rows: Iterable[tuple[str, int, float]],
                 fraction: float) -> Iterator[tuple[str, int, float]]:
    """One ``(series, bucket, percentile)`` per group of rows sorted by series, bucket, value."""
    for (series, bucket), group in itertools.groupby(rows, key=lambda row: row[:2]):
        yield series, bucket, percentile_cont([row[2] for row in group], fraction)
