"""Accepted batches round-trip through every store (Hypothesis; derandomized, bounded).

Generated valid batches (tests/strategies.py: any names, label sets, values, Unicode hosts
and messages, no two points of one host, name, labels and time) go in through the
Repositories interface of the fake, SQLite and PostgreSQL, and come back as the test
computes them: every 10 s bucket's count, min, max, last, sum and avg of each series, the
newest point of each series (``fleet.latest``), and each log entry, newest first, with its
time, level, message, path and labels.

Examples share the test's store, as clients share a server; each uses hosts of its own.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miniobserv.model import Metric, parse_log_batch, parse_metric_batch
from miniobserv.server.storage.base import LogQuery, MetricQuery, Repositories, to_micros
from tests.strategies import FUZZ, log_entries, metric_points, valid_hosts

ROUND_TRIPS = settings(FUZZ, max_examples=60,
                       suppress_health_check=[HealthCheck.function_scoped_fixture])
BUCKET = "10s"
BUCKET_MICROS = 10 * 10**6
EXACT = ("count", "min", "max", "last")
SeriesKey = tuple[str, str, tuple[tuple[str, str], ...]]


def own_host(drawn: str) -> str:
    """A host name of this example alone (the examples share one store)."""
    return f"rt{uuid.uuid4().hex[:8]}-{drawn}"


def bucket_start(time: datetime) -> datetime:
    micros = to_micros(time) // BUCKET_MICROS * BUCKET_MICROS
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def expected_buckets(points: list[Metric], agg: str) -> dict[datetime, float]:
    """What a query of ``agg`` over ``points`` (one series) answers, computed here."""
    buckets: dict[datetime, list[Metric]] = defaultdict(list)
    for point in points:
        buckets[bucket_start(point.time)].append(point)
    answer = {}
    for start, members in buckets.items():
        values = [p.value for p in members]
        answer[start] = {"count": float(len(values)), "min": min(values), "max": max(values),
                         "last": max(members, key=lambda p: p.time).value,
                         "sum": math.fsum(values), "avg": math.fsum(values) / len(values),
                         }[agg]
    return answer


def close(got: Mapping[datetime, float], want: Mapping[datetime, float],
          points: list[Metric]) -> bool:
    """Equal keys, values equal up to the rounding of a sum of ``points`` in another order
    (n ulps of the largest magnitude: 1e100 + 1 - 1e100 may be 0 or 1)."""
    slack = len(points) * max(abs(p.value) for p in points) * 2.0**-50
    return got.keys() == want.keys() and all(
        math.isclose(got[k], want[k], rel_tol=1e-12, abs_tol=slack) for k in want)


def series_of(points: list[Metric]) -> dict[SeriesKey, list[Metric]]:
    series: dict[SeriesKey, list[Metric]] = defaultdict(list)
    for point in points:
        series[(point.host, point.name, tuple(sorted(point.labels.items())))].append(point)
    return series


@ROUND_TRIPS
@given(data=st.data())
def test_metric_batches_come_back_as_computed(repos: Repositories, data: st.DataObject) -> None:
    now = datetime.now(UTC)
    stored: list[Metric] = []
    for drawn in data.draw(st.lists(valid_hosts, min_size=1, max_size=2, unique=True)):
        host = own_host(drawn)
        wire: dict[str, Any] = {"host": host, "metrics": data.draw(metric_points(now, host))}
        if data.draw(st.booleans()):
            wire["batch_id"] = str(uuid.uuid4())
        batch = parse_metric_batch(wire, now)
        assert repos.metrics.insert_batch(batch) == len(batch.metrics)
        stored += batch.metrics
    start, end = now - timedelta(hours=2), now + timedelta(minutes=1)
    for (host, name, labels), points in series_of(stored).items():
        for agg in (*EXACT, "sum", "avg"):
            answer = repos.metrics.query(MetricQuery(host=host, name=name, start=start,
                                                     end=end, bucket=BUCKET, agg=agg,
                                                     labels=labels))
            got = {p.time: p.value for p in answer[0].points} if answer else {}
            want = expected_buckets(points, agg)
            assert got == want if agg in EXACT else close(got, want, points), \
                (host, name, labels, agg)
        latest = repos.fleet.latest(start, name=name, host=host, labels=labels)
        newest = max(points, key=lambda p: p.time)
        assert [(v.time, v.value, dict(v.labels)) for v in latest] == \
            [(newest.time, newest.value, dict(labels))]
    hosts = set(repos.metrics.hosts())
    assert {point.host for point in stored} <= hosts


@ROUND_TRIPS
@given(data=st.data())
def test_log_batches_come_back_newest_first(repos: Repositories, data: st.DataObject) -> None:
    now = datetime.now(UTC)
    host = own_host(data.draw(valid_hosts))
    wire: dict[str, Any] = {"host": host, "entries": data.draw(log_entries(now))}
    if data.draw(st.booleans()):
        wire["batch_id"] = str(uuid.uuid4())
    batch = parse_log_batch(wire, now)
    assert repos.logs.insert_batch(batch) == len(batch.entries)
    page = repos.logs.query(LogQuery(host=host, limit=1000))
    assert page.next_cursor is None
    got = [(r.time, r.host, r.level, r.message, r.path, dict(r.labels)) for r in page.entries]
    want = [(e.time, e.host, e.level, e.message, e.path, dict(e.labels))
            for e in reversed(batch.entries)]
    assert got == want
    ids = [record.id for record in page.entries]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
