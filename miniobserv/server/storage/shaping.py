"""Shaping shared by every store: buckets, percentiles, label spellings, answers.

Written once here so that the PostgreSQL, SQLite and fake stores answer alike: the
epoch-aligned bucket arithmetic, PostgreSQL's ``percentile_cont``, the canonical spelling of
a label set, the JSON path of a label key, and the shaping of ``(series, bucket, value)``
rows into :class:`~miniobserv.server.storage.base.Series`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from miniobserv.server.storage.base import (
    EPOCH,
    MICROSECOND,
    LatestValue,
    MetricQuery,
    Point,
    Series,
)

_encode_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def canonical_labels(labels: Mapping[str, str]) -> str:
    """Labels as JSON text with sorted keys: one spelling per label set."""
    return _encode_canonical(dict(labels))


def json_path(key: str) -> str:
    """SQLite's JSON path of a label key (keys are ``[A-Za-z_][A-Za-z0-9_]*``: no escaping)."""
    return f'$."{key}"'


def containment(key: str, value: str) -> str:
    """The jsonb ``@>`` operand of one label pair. One test per pair: in a single object a
    repeated key would collapse, and ``label=k:a&label=k:b`` must match nothing."""
    return json.dumps({key: value})


def percentile_cont(ordered: Sequence[float], fraction: float) -> float:
    """PostgreSQL's ``percentile_cont`` over ascending values, with the same arithmetic."""
    position = fraction * (len(ordered) - 1)
    lower, upper = math.floor(position), math.ceil(position)
    if lower == upper:
        return ordered[lower]
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def bucket_floor(time: datetime, width: timedelta) -> datetime:
    """The start of the epoch-aligned bucket of ``width`` holding ``time`` (exact integers)."""
    return EPOCH + (time - EPOCH) // width * width


def whole_buckets(query: MetricQuery) -> tuple[datetime, datetime] | None:
    """``(first, stop)``: the buckets starting in ``[first, stop)`` lie wholly inside
    ``[start, end]``; None when there is no such bucket."""
    width = timedelta(seconds=query.bucket_seconds)
    first = bucket_floor(query.start, width)
    if first < query.start:
        first += width
    stop = bucket_floor(query.end + MICROSECOND, width)  # end is inclusive
    return (first, stop) if first < stop else None


def aware_utc(time: datetime) -> datetime:
    return time.astimezone(UTC)


def to_series(rows: Iterable[tuple[str, Any, float]], group_by: str | None,
              to_time: Callable[[Any], datetime] = aware_utc) -> list[Series]:
    """Shape ``(series, bucket, value)`` rows, sorted by series then bucket, into Series.

    ``to_time`` turns a store's bucket (a datetime, integer microseconds) into UTC.
    """
    if group_by is None:  # one answer series: every row's key is ''
        return [Series(labels={}, points=[Point(to_time(bucket), float(value))
                                          for _, bucket, value in rows])]
    grouped: dict[str, list[Point]] = {}
    for key, bucket, value in rows:
        grouped.setdefault(key, []).append(Point(to_time(bucket), float(value)))
    # Sorted here, not by the database's collation, so every store orders alike.
    return [Series(labels={group_by: key}, points=grouped[key]) for key in sorted(grouped)]


def merge_latest(values: Iterable[LatestValue]) -> list[LatestValue]:
    """One value per (host, name, labels): the newest, the greatest among equal times.

    Sorted by host, name and canonical labels, in code-point order, on every store.
    """
    best: dict[tuple[str, str, str], LatestValue] = {}
    for value in values:
        key = (value.host, value.name, canonical_labels(value.labels))
        kept = best.get(key)
        if kept is None or (value.time, value.value) > (kept.time, kept.value):
            best[key] = value
    return [best[key] for key in sorted(best)]
