"""SQLite metrics: series resolved first, samples read by id, integer-µs buckets (SPEC §7).

A point is a row of ``samples(series_id, time, value)``, a ``WITHOUT ROWID`` table keyed
``(series_id, time)``: one value per series and time, a later write replacing it (the
ingest's ``INSERT ... ON CONFLICT DO UPDATE``, in batch order, so the last occurrence in a
batch wins). Its series (host, name, canonical labels) is a row of ``series``.

Every query is one statement that walks the matching series first (the unique index
``series(host, name, labels_text)`` for one host, the series table for the fleet; label
filters and ``group_by`` read ``series.labels_text``, the canonical JSON in that index, so
the series are read from the index alone) and, for each, the key range of its samples
in ``[start, end]`` (``CROSS JOIN`` fixes that order for SQLite's planner). Times are
INTEGER microseconds since the UTC epoch, so bucketing is exact integer arithmetic and
answers match PostgreSQL's ``date_bin``. ``sum/avg/min/max/count`` and ``last`` run in SQL;
percentiles are computed in Python exactly as PostgreSQL's ``percentile_cont`` does.
"""

from __future__ import annotations

import itertools
import sqlite3
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
    to_micros,
)
from miniobserv.server.storage.claims import metrics_claim
from miniobserv.server.storage.series import BatchSeries, SeriesKey
from miniobserv.server.storage.shaping import (
    json_path,
    percentile_cont,
    to_series,
)
from miniobserv.server.storage.sqlite.db import SQLiteDatabase, from_micros, insert_batch

_INSERT = """INSERT INTO samples (series_id, time, value) VALUES (?, ?, ?)
    ON CONFLICT (series_id, time) DO UPDATE SET value = excluded.value"""

# The allowlist of aggregate SQL, keyed by base.AGGREGATES; None: computed in Python.
AGGREGATE_SQL: Mapping[str, str | None] = {
    "avg": "avg(s.value)", "min": "min(s.value)", "max": "max(s.value)",
    "sum": "sum(s.value)", "count": "count(*)", "last": None,
    **{name: None for name in PERCENTILES},
}
assert set(AGGREGATE_SQL) == set(AGGREGATES), "every aggregate needs a plan"

BUCKET = "(s.time - ((s.time % :width) + :width) % :width)"  # floor, also before 1970
WHOLE_RANGE = "0"  # the bucket expression of a whole-range aggregate (top)
_FROM = "FROM series AS r CROSS JOIN samples AS s"  # series first, then their samples
_AGGREGATED = """SELECT {series} AS series, {bucket} AS bucket, {aggregate} AS value
    """ + _FROM + """ WHERE {where} GROUP BY series, bucket ORDER BY series, bucket"""
# ``last``: the newest point's value; among points of the same newest time (several series
# of one group), the greatest.
_LAST = """SELECT series, bucket, value FROM (
        SELECT {series} AS series, {bucket} AS bucket, s.value AS value, row_number() OVER (
            PARTITION BY {series}, {bucket} ORDER BY s.time DESC, s.value DESC) AS rank
        """ + _FROM + """ WHERE {where})
    WHERE rank = 1 ORDER BY series, bucket"""
_VALUES = """SELECT {series} AS series, {bucket} AS bucket, s.value AS value
    """ + _FROM + """ WHERE {where} ORDER BY series, bucket, value"""
# The distinct groups of the series with a sample in the window: one key probe per series.
_COUNT = """SELECT count(*) FROM (SELECT DISTINCT {series} FROM series AS r
    WHERE {series_where} AND EXISTS (SELECT 1 FROM samples AS s
        WHERE s.series_id = r.id AND s.time >= :start AND s.time <= :end)
    LIMIT :limit)"""


class SQLiteMetrics:
    """Metrics in the ``series`` and ``samples`` tables of a SQLite file."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db
        from miniobserv.server.storage.sqlite.fleetquery import (  # imports this module
            SQLiteFleetQueries,
        )

        self._fleet_queries = SQLiteFleetQueries(db)

    def insert_batch(self, batch: MetricBatch) -> int:
        """Store the batch in one transaction, or acknowledge a known ``batch_id``."""
        series = BatchSeries.of(batch)
        columns = series.columns

        def rows(ids: Mapping[SeriesKey, int]) -> list[tuple[int, int, float]]:
            slot_ids = [ids[key] for key in series.keys]
            return [(slot_ids[slot], time, value) for slot, time, value
                    in zip(columns.slots, columns.times, columns.values, strict=True)]

        insert_batch(self._db, metrics_claim(batch, columns), batch.host, _INSERT, rows,
                     series.first)
        return len(columns)

    def query(self, query: MetricQuery) -> list[Series]:
        """Epoch-aligned buckets over ``start <= time <= end``, ascending, empty ones omitted."""
        if query.is_fleet_wide:
            return self._fleet_queries.query(query)
        check(query)
        if not is_answerable(query):
            return to_series([], query.group_by, from_micros)  # no stored label has such a key
        with self._db.read() as conn:
            return to_series(read_rows(conn, query, BUCKET), query.group_by, from_micros)

    def count_series(self, query: MetricQuery, limit: int) -> int:
        """Distinct ``group_by`` values of the matching series with a sample in the window,
        at most ``limit``."""
        if query.is_fleet_wide:
            return self._fleet_queries.count_series(query, limit)
        return count_series(self._db, query, limit)

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


def check(query: MetricQuery) -> None:
    if query.agg not in AGGREGATE_SQL or query.bucket not in BUCKETS:
        raise ValueError(f"unsupported bucket/aggregate: {query.bucket!r}/{query.agg!r}")


def is_answerable(query: MetricQuery) -> bool:
    """False when a filter or group_by names a key no stored label can have."""
    return all(is_label_key(key) for key, _ in query.labels) and \
        (query.group_by in (None, HOST_GROUP) or is_label_key(query.group_by))


def read_rows(conn: sqlite3.Connection, query: MetricQuery,
              bucket: str) -> list[tuple[Any, ...]]:
    """``(series, bucket, value)`` rows of ``query`` sorted by series and bucket; ``bucket``
    is :data:`BUCKET` or :data:`WHOLE_RANGE`."""
    series_where, params = series_filter(query)
    where = f"{series_where} AND s.series_id = r.id AND s.time >= :start AND s.time <= :end"
    parts = {"series": group_expression(query), "bucket": bucket, "where": where}
    if query.agg in PERCENTILES:
        rows = conn.execute(_VALUES.format(**parts), params)
        return list(_percentiles(rows, PERCENTILES[query.agg]))
    template = _LAST if query.agg == "last" else _AGGREGATED
    statement = template.format(aggregate=AGGREGATE_SQL[query.agg], **parts)
    return conn.execute(statement, params).fetchall()


def count_series(db: SQLiteDatabase, query: MetricQuery, limit: int) -> int:
    """How many series ``query`` answers (groups with a sample in the window), at most
    ``limit``; 1 without ``group_by``."""
    if query.group_by is None:
        return 1
    if not is_answerable(query):
        return 0
    series_where, params = series_filter(query)
    statement = _COUNT.format(series=group_expression(query), series_where=series_where)
    with db.read() as conn:
        return int(conn.execute(statement, {**params, "limit": limit}).fetchone()[0])


def group_expression(query: MetricQuery) -> str:
    """The series a sample belongs to in the answer: its host, its ``group_by`` label, ''."""
    if query.group_by == HOST_GROUP:
        return "r.host"
    return "''" if query.group_by is None else "json_extract(r.labels_text, :group)"


def series_filter(query: MetricQuery) -> tuple[str, dict[str, Any]]:
    """The conditions on ``series AS r`` of ``query`` and every parameter of its statements:
    no host condition for ``host=None``, no label presence for ``group_by="host"``."""
    params: dict[str, Any] = {"width": query.bucket_seconds * 1_000_000, "host": query.host,
                              "name": query.name, "start": to_micros(query.start),
                              "end": to_micros(query.end)}
    clauses = ["r.host = :host"] if query.host is not None else []
    clauses.append("r.name = :name")
    for index, (key, value) in enumerate(query.labels):
        params[f"key{index}"], params[f"value{index}"] = json_path(key), value
        clauses.append(f"json_extract(r.labels_text, :key{index}) = :value{index}")
    if query.group_by is not None and query.group_by != HOST_GROUP:
        params["group"] = json_path(query.group_by)
        clauses.append("json_extract(r.labels_text, :group) IS NOT NULL")
    return " AND ".join(clauses), params


def _percentiles(rows: Iterable[tuple[str, int, float]],
                 fraction: float) -> Iterator[tuple[str, int, float]]:
    """One ``(series, bucket, percentile)`` per group of rows sorted by series, bucket, value."""
    for (series, bucket), group in itertools.groupby(rows, key=lambda row: row[:2]):
        yield series, bucket, percentile_cont([row[2] for row in group], fraction)
