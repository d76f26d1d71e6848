"""The repository contract as a grid over every store (issue 10).

Every bucket x aggregate (percentiles and ``last`` included) x label filter x ``group_by``
(none, a label, the host) x host (one, the whole fleet), ``count_series`` of each, the
fleet-wide reads (``latest``, ``top``) and the one-value-per-(series, time) rule, over the
fake, SQLite, plain PostgreSQL and TimescaleDB (when the test server has it). Expected
answers are computed here from the generated points by the reference implementation of the
per-host contract suite, never hard-coded.

The replace rule (issue 10's design): a later write of the same series (host, name, labels in
any key order) and time replaces the value, the last occurrence in a batch winning. The
reference folds the batches in send order into one value per (series, time). On TimescaleDB
the rewrites are also checked in materialized rollups, once their refresh has run.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from miniobserv.model import Metric, MetricBatch, PointColumns, parse_metric_batch
from miniobserv.server.storage import migrate, open_repositories
from miniobserv.server.storage.base import (
    AGGREGATES,
    BUCKETS,
    HOST_GROUP,
    TOP_ORDERS,
    HostValue,
    LatestValue,
    MetricQuery,
    Repositories,
    Series,
    TopQuery,
)
from miniobserv.server.storage.postgres import db as postgres_db
from miniobserv.server.storage.postgres.db import ROLLUP_VIEWS
from miniobserv.server.storage.shaping import bucket_floor, canonical_labels
from tests.fakes import FakeRepositories, sample_key
from tests.server.storage.conftest import NO_TIMESCALEDB, STORES, config_for
from tests.server.storage.test_contract import assert_same
from tests.server.storage.test_fleetquery_contract import fleet_reference as reference
from tests.server.storage.test_fleetquery_contract import top_reference

NAME, OTHER = "cpu.usage_pct", "mem.used_pct"
# "Zeta" sorts before "db-01" by code point, after it in most collations: the order is ours.
HOSTS = ("web-01", "web-02", "db-01", "Zeta")
US = timedelta(microseconds=1)

# "postgres-packed": plain PostgreSQL that packs every sample stored so far into blocks
# (storage/postgres/blocks.py) after every third batch, so that later batches rewrite packed
# points and answers read narrow rows and blocks together (issue 10, storage target 2).
GRID_STORES = [*STORES, pytest.param("postgres-packed", marks=pytest.mark.integration),
               pytest.param("timescaledb", marks=[pytest.mark.integration,
                                                  pytest.mark.timescaledb])]
PACK_EVERY = 3


# --- the data set ---------------------------------------------------------------------------

@dataclass
class DataSet:
    """Batches in send order, the window of the queries, and what the stores must hold."""

    start: datetime
    end: datetime
    batches: list[MetricBatch] = field(default_factory=list)
    _stored: list[Metric] | None = field(default=None, repr=False)

    def stored(self) -> list[Metric]:
        """One point per (series, time): the last one sent (computed once, after the last
        batch was added)."""
        if self._stored is None:
            kept: dict[Any, Metric] = {}
            for batch in self.batches:
                for metric in batch.metrics:
                    kept[sample_key(metric)] = metric
            self._stored = list(kept.values())
        return self._stored

    def sent(self) -> int:
        return sum(len(batch.metrics) for batch in self.batches)


def reordered(labels: dict[str, str], rng: random.Random) -> dict[str, str]:
    """The same label set, keys in another order now and then (one series all the same)."""
    return dict(reversed(labels.items())) if rng.random() < 0.3 else dict(labels)


def generate(now: datetime, seed: int = 10) -> DataSet:
    """Irregular points of every host on one shared time grid (ties across hosts and cores
    for ``last``), bursts (percentiles that interpolate), window edges, unlabeled points, a
    host with fewer series, another metric; no (series, time) twice."""
    rng = random.Random(seed)
    # Not aligned to any bucket: the first bucket of every width starts before it.
    start = now.replace(microsecond=123456) - timedelta(hours=31, seconds=37)
    data = DataSet(start, start + timedelta(hours=30, microseconds=1234))
    points: dict[str, list[Metric]] = defaultdict(list)
    time = start - timedelta(minutes=3)
    while time <= data.end + timedelta(minutes=3):
        burst = 4 if rng.random() < 0.15 else 1
        for index, host in enumerate(HOSTS):
            env = rng.choice(["prod", "dev"])
            cores = ("total", "0", "1") if index < 3 else ("total",)
            for offset in range(burst):  # distinct times within seconds
                t = time + timedelta(seconds=4 * offset + (rng.randint(0, 3) if offset else 0))
                for core in cores:  # same time for every core and host: ties for "last"
                    value = round(rng.uniform(0, 100) + 10 * index, rng.choice([0, 2, 6]))
                    labels = reordered({"core": core, "env": env}, rng)
                    points[host].append(Metric(t, host, NAME, value, labels))
        if rng.random() < 0.2:
            points["web-01"].append(Metric(time + 7 * US, "web-01", NAME, rng.uniform(0, 100)))
        if rng.random() < 0.5:
            points["db-01"].append(Metric(time, "db-01", OTHER, rng.uniform(0, 100)))
        time += timedelta(seconds=rng.randint(60, 900), microseconds=rng.randint(0, 999999))
    for edge in (start - US, start, data.end, data.end + US):  # inclusive window
        points["web-02"].append(Metric(edge, "web-02", NAME, rng.uniform(0, 100),
                                       {"core": "total"}))
    data.batches = fleet_order(points)
    return data


def fleet_order(points: dict[str, list[Metric]], size: int = 1000) -> list[MetricBatch]:
    """Batches of one host each, at most ``size`` points: every host's first, then second..."""
    chunks = {host: [ms[i:i + size] for i in range(0, len(ms), size)]
              for host, ms in points.items()}
    batches = []
    for round_ in range(max(len(c) for c in chunks.values())):
        for host in sorted(chunks):
            if round_ < len(chunks[host]):
                batches.append(MetricBatch(host, chunks[host][round_], uuid.uuid4()))
    return batches


def rewritten(data: DataSet, seed: int = 11) -> DataSet:
    """``data`` followed by batches that send a fifth of its points again with other values
    (smaller ones too: the later write wins, not the greatest), labels in any key order,
    some twice in the same batch, mixed with new points."""
    rng = random.Random(seed)
    again = DataSet(data.start, data.end, list(data.batches))
    by_host: dict[str, list[Metric]] = defaultdict(list)
    for metric in data.stored():
        if rng.random() < 0.2:
            new = replace(metric, value=round(metric.value + rng.uniform(-60, 60), 3),
                          labels=reordered(dict(metric.labels), rng))
            if rng.random() < 0.25:  # twice in one batch: the second occurrence wins
                by_host[metric.host].append(replace(new, value=new.value - 1000))
            by_host[metric.host].append(new)
        if rng.random() < 0.02:  # a new point 1 µs later, same batch as the rewrites
            by_host[metric.host].append(replace(metric, time=metric.time + US, value=-1.0))
    for host in by_host:
        rng.shuffle(by_host[host])
    again.batches += fleet_order(by_host, size=300)
    return again


# --- the reference --------------------------------------------------------------------------

def matches(m: Metric, name: str, start: datetime | None, end: datetime | None,
            host: str | None, labels: Sequence[tuple[str, str]]) -> bool:
    return m.name == name and host in (None, m.host) and \
        (start is None or start <= m.time) and (end is None or m.time <= end) and \
        all(m.labels.get(k) == v for k, v in labels)


def latest_reference(points: Sequence[Metric], since: datetime, name: str | None,
                     host: str | None, labels: Sequence[tuple[str, str]]) -> list[LatestValue]:
    newest: dict[tuple[str, str, str], Metric] = {}
    for m in points:
        if m.time >= since and name in (None, m.name) and host in (None, m.host) and \
                all(m.labels.get(k) == v for k, v in labels):
            key = (m.host, m.name, canonical_labels(m.labels))
            if key not in newest or newest[key].time < m.time:
                newest[key] = m
    return [LatestValue(m.host, m.name, dict(m.labels), m.time, m.value)
            for _, m in sorted(newest.items())]


def assert_same_latest(got: list[LatestValue], want: list[LatestValue]) -> None:
    assert [(v.host, v.name, dict(v.labels), v.time) for v in got] == \
        [(v.host, v.name, dict(v.labels), v.time) for v in want]
    assert [v.value for v in got] == pytest.approx([v.value for v in want], rel=1e-12)
    assert all(v.time.utcoffset() == timedelta(0) for v in got)


def assert_same_top(got: list[HostValue], want: list[HostValue]) -> None:
    assert [h.host for h in got] == [h.host for h in want]
    assert [h.value for h in got] == pytest.approx([h.value for h in want], rel=1e-9)


# --- stores ---------------------------------------------------------------------------------

def load(repos: Repositories, data: DataSet, *, as_sent: bool = False) -> Repositories:
    """Store ``data``'s batches as built (records), or ``as_sent``: each batch's wire JSON
    validated by the API's parser, so its metrics reach the store as PointColumns."""
    for batch in data.batches:
        if as_sent:
            batch = parse_metric_batch(batch.to_json())
            assert isinstance(batch.metrics, PointColumns)
        assert repos.metrics.insert_batch(batch) == len(batch.metrics)
    return repos


def opened(kind: str, request: pytest.FixtureRequest) -> Iterator[Repositories]:
    """An empty migrated store of ``kind``, closed (and dropped) afterwards."""
    if kind == "fake":
        yield FakeRepositories()
        return
    if kind == "sqlite":
        path = request.getfixturevalue("tmp_path_factory").mktemp("grid") / "grid.db"
        url = f"sqlite:///{path}"
        migrate.upgrade(url)
        databases = None
    else:
        databases = request.getfixturevalue("postgres_databases")
        url = databases.create(timescaledb=kind == "timescaledb")
        if kind == "timescaledb":
            with psycopg.connect(url) as conn:
                present = postgres_db.has_timescaledb(conn)
            if not present:
                databases.drop(url)
                pytest.skip(NO_TIMESCALEDB)
    repos = open_repositories(config_for(url))
    if kind == "postgres-packed":
        packing(repos)
    try:
        yield repos
    finally:
        repos.close()
        if databases is not None:
            databases.drop(url)


def packing(repos: Repositories) -> None:
    """Make ``repos`` pack every stored sample into blocks after every PACK_EVERY-th batch
    (the first one included)."""
    insert = repos.metrics.insert_batch
    sent = itertools.count()

    def insert_then_pack(batch: MetricBatch) -> int:
        stored = insert(batch)
        if next(sent) % PACK_EVERY == 0:
            assert repos.fleet.pack_samples(datetime.now(UTC) + timedelta(days=1)) > 0
        return stored

    repos.metrics.insert_batch = insert_then_pack  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def data() -> DataSet:
    """The grid's points, ending about an hour ago (computed when the module's tests start)."""
    return generate(datetime.now(UTC))


@pytest.fixture(scope="module", params=GRID_STORES)
def loaded(request: pytest.FixtureRequest, data: DataSet) -> Iterator[Repositories]:
    """A store holding ``data``, shared by the read-only tests of this module."""
    for repos in opened(request.param, request):
        yield load(repos, data)


@pytest.fixture(scope="module")
def rewritten_data(data: DataSet) -> DataSet:
    return rewritten(data)


@pytest.fixture(scope="module", params=GRID_STORES)
def replaced(request: pytest.FixtureRequest, rewritten_data: DataSet) -> Iterator[Repositories]:
    """A store that was sent ``data`` and then a fifth of it again with other values, as the
    API sends them (``loaded`` has the batches as built: both paths meet the grid)."""
    for repos in opened(request.param, request):
        yield load(repos, rewritten_data, as_sent=True)


@pytest.fixture(params=GRID_STORES)
def empty(request: pytest.FixtureRequest) -> Iterator[Repositories]:
    """An empty store of this test alone."""
    yield from opened(request.param, request)


# --- guards on the data ---------------------------------------------------------------------

def test_the_data_set_exercises_the_edges(data: DataSet) -> None:
    stored = data.stored()
    assert len(stored) == data.sent()  # no (series, time) twice: answers as before issue 10
    times = {m.time for m in stored}
    assert {data.start - US, data.start, data.end, data.end + US} <= times
    hosts_at: dict[datetime, set[str]] = defaultdict(set)
    for m in stored:
        hosts_at[m.time].add(m.host)
    assert sum(1 for hosts in hosts_at.values() if hosts == set(HOSTS)) > 100  # ties
    assert any(not m.labels for m in stored)
    assert len({tuple(m.labels) for m in stored if len(m.labels) == 2}) == 2  # key orders
    per_10s = reference(stored, query(data, "10s", "count", labels=(("core", "total"),)))
    assert max(p.value for p in per_10s[0].points) >= 3  # percentiles really interpolate
    assert reference(stored, query(data, "1d", "count"))[0].points[0].time < data.start


def test_the_rewrites_replace_values_within_and_across_batches(data: DataSet,
                                                               rewritten_data: DataSet) -> None:
    before = {sample_key(m): m.value for m in data.stored()}
    after = {sample_key(m): m.value for m in rewritten_data.stored()}
    changed = [key for key in before if after[key] != before[key]]
    assert len(changed) > len(before) // 10
    assert any(after[key] < before[key] for key in changed)  # not the greatest value
    assert len(after) > len(before)  # and some new points
    twice = [batch for batch in rewritten_data.batches[len(data.batches):]
             if len({sample_key(m) for m in batch.metrics}) < len(batch.metrics)]
    assert twice


# --- the grid -------------------------------------------------------------------------------

def query(data: DataSet, bucket: str = "1m", agg: str = "avg", **kwargs: Any) -> MetricQuery:
    fields: dict[str, Any] = {"host": None, "name": NAME, "start": data.start, "end": data.end}
    return MetricQuery(bucket=bucket, agg=agg, **{**fields, **kwargs})


HOST_CHOICES: dict[str, str | None] = {"web-01": "web-01", "fleet": None}
LABEL_FILTERS: dict[str, tuple[tuple[str, str], ...]] = {
    "any": (), "core=total": (("core", "total"),), "core=0,env=prod": (("core", "0"),
                                                                       ("env", "prod"))}
GROUPS: dict[str, str | None] = {"one": None, "by-core": "core", "by-env": "env",
                                 "by-host": HOST_GROUP}
SELECTIONS: dict[str, dict[str, Any]] = {
    f"{host},{labels},{group}": {"host": HOST_CHOICES[host], "labels": LABEL_FILTERS[labels],
                                 "group_by": GROUPS[group]}
    for host in HOST_CHOICES for labels in LABEL_FILTERS for group in GROUPS}


@pytest.mark.parametrize("selection", list(SELECTIONS))
@pytest.mark.parametrize("agg", AGGREGATES)
@pytest.mark.parametrize("bucket", list(BUCKETS))
def test_query_grid(loaded: Repositories, data: DataSet, bucket: str, agg: str,
                    selection: str) -> None:
    wanted = query(data, bucket, agg, **SELECTIONS[selection])
    expected = reference(data.stored(), wanted)
    assert any(series.points for series in expected)
    assert_same(loaded.metrics.query(wanted), expected)


@pytest.mark.parametrize("selection", list(SELECTIONS))
def test_count_series_grid(loaded: Repositories, data: DataSet, selection: str) -> None:
    wanted = query(data, **SELECTIONS[selection])
    series = len(reference(data.stored(), wanted)) if wanted.group_by else 1
    for limit in (1, 2, 100):
        assert loaded.metrics.count_series(wanted, limit) == min(series, limit)


NOTHING: dict[str, dict[str, Any]] = {
    "unknown host": {"host": "nobody"}, "unknown name": {"name": "disk.used_pct"},
    "same key twice": {"labels": (("core", "0"), ("core", "1"))},
    "unknown label": {"labels": (("missing_key", "x"),)},
    "hostile label": {"labels": (("core", "x') OR 1=1; --"),)},
}


@pytest.mark.parametrize("group", list(GROUPS))
@pytest.mark.parametrize("host", list(HOST_CHOICES))
@pytest.mark.parametrize("nothing", list(NOTHING))
def test_nothing_matches(loaded: Repositories, data: DataSet, nothing: str, host: str,
                         group: str) -> None:
    wanted = query(data, host=HOST_CHOICES[host], group_by=GROUPS[group])
    wanted = replace(wanted, **NOTHING[nothing])
    assert reference(data.stored(), wanted) in ([], [Series({}, [])])
    expected = [] if wanted.group_by else [Series({}, [])]
    assert loaded.metrics.query(wanted) == expected
    assert loaded.metrics.count_series(wanted, 10) == (1 if wanted.group_by is None else 0)


def test_group_by_an_absent_label_and_an_empty_window(loaded: Repositories,
                                                      data: DataSet) -> None:
    for host in HOST_CHOICES.values():
        assert loaded.metrics.query(query(data, host=host, group_by="missing_key")) == []
        empty = query(data, host=host, start=data.end + 2 * US, end=data.end + 3 * US)
        assert loaded.metrics.query(empty) == [Series({}, [])]


# --- fleet-wide reads: latest and top -------------------------------------------------------

LATEST_FILTERS: dict[str, dict[str, Any]] = {
    "all": {}, "name": {"name": NAME}, "other name": {"name": OTHER},
    "host": {"host": "web-02"}, "name,core=total": {"name": NAME, "labels": [("core", "total")]},
    "core=0,env=prod": {"labels": [("core", "0"), ("env", "prod")]},
    "host,name,core=1": {"host": "db-01", "name": NAME, "labels": [("core", "1")]},
}


@pytest.mark.parametrize("since", ["start", "an hour before the end", "end"])
@pytest.mark.parametrize("filters", list(LATEST_FILTERS))
def test_latest_grid(loaded: Repositories, data: DataSet, filters: str, since: str) -> None:
    moment = {"start": data.start, "an hour before the end": data.end - timedelta(hours=1),
              "end": data.end}[since]
    kwargs = {"name": None, "host": None, "labels": (), **LATEST_FILTERS[filters]}
    expected = latest_reference(data.stored(), moment, **kwargs)
    assert expected or since == "end"
    assert_same_latest(loaded.fleet.latest(moment, **kwargs), expected)
    cut = loaded.fleet.latest(moment, **kwargs, limit=2)
    assert len(cut) == min(2, len(expected)) and all(value in expected for value in cut)


def test_latest_of_nothing(loaded: Repositories, data: DataSet) -> None:
    after = max(m.time for m in data.stored()) + US
    assert loaded.fleet.latest(after) == []
    assert loaded.fleet.latest(data.start, name="disk.used_pct") == []
    assert loaded.fleet.latest(data.start, labels=[("core", "0"), ("core", "1")]) == []


@pytest.mark.parametrize("labels", list(LABEL_FILTERS))
@pytest.mark.parametrize("order", TOP_ORDERS)
@pytest.mark.parametrize("agg", AGGREGATES)
def test_top_grid(loaded: Repositories, data: DataSet, agg: str, order: str,
                  labels: str) -> None:
    for limit in (1, 3, 100):
        wanted = TopQuery(NAME, data.start, data.end, agg=agg, labels=LABEL_FILTERS[labels],
                          limit=limit, order=order)
        expected = top_reference(data.stored(), wanted)
        hosts = len(HOSTS) - (1 if "core=0" in labels else 0)  # Zeta has no core 0
        assert len(expected) == min(limit, hosts)
        assert_same_top(loaded.metrics.top(wanted), expected)


# --- one value per (series, time) -----------------------------------------------------------

REPLACE_BUCKETS = ["10s", "1h"]


@pytest.mark.parametrize("selection", list(SELECTIONS))
@pytest.mark.parametrize("agg", AGGREGATES)
@pytest.mark.parametrize("bucket", REPLACE_BUCKETS)
def test_query_grid_after_rewrites(replaced: Repositories, rewritten_data: DataSet,
                                   bucket: str, agg: str, selection: str) -> None:
    wanted = query(rewritten_data, bucket, agg, **SELECTIONS[selection])
    expected = reference(rewritten_data.stored(), wanted)
    assert any(series.points for series in expected)
    assert_same(replaced.metrics.query(wanted), expected)


@pytest.mark.parametrize("filters", list(LATEST_FILTERS))
def test_latest_and_top_after_rewrites(replaced: Repositories, rewritten_data: DataSet,
                                       filters: str) -> None:
    kwargs = {"name": None, "host": None, "labels": (), **LATEST_FILTERS[filters]}
    expected = latest_reference(rewritten_data.stored(), rewritten_data.start, **kwargs)
    assert_same_latest(replaced.fleet.latest(rewritten_data.start, **kwargs), expected)
    for agg in AGGREGATES:
        wanted = TopQuery(NAME, rewritten_data.start, rewritten_data.end, agg=agg,
                          labels=tuple(kwargs["labels"]), limit=100)
        assert_same_top(replaced.metrics.top(wanted), top_reference(rewritten_data.stored(),
                                                                    wanted))


def recent_time() -> datetime:
    """Two seconds into a 10 s bucket about five minutes ago."""
    return bucket_floor(datetime.now(UTC) - timedelta(minutes=5), timedelta(seconds=10)) + \
        timedelta(seconds=2)


def values_at(repos: Repositories, time: datetime, host: str = "web-01",
              labels: tuple[tuple[str, str], ...] = ()) -> dict[str, float]:
    """Every aggregate of the 10 s bucket holding ``time`` and the next 5 seconds."""
    answers = {}
    for agg in AGGREGATES:
        [series] = repos.metrics.query(MetricQuery(host, NAME, time, time + timedelta(seconds=5),
                                                   "10s", agg, labels))
        [point] = series.points
        answers[agg] = point.value
    return answers


def test_the_same_series_and_time_twice_in_one_batch_keeps_the_second(
        empty: Repositories) -> None:
    time = recent_time()
    labels = {"core": "0", "env": "prod"}
    empty.metrics.insert_batch(MetricBatch("web-01", [
        Metric(time, "web-01", NAME, 70.0, labels),
        Metric(time, "web-01", NAME, 20.0, dict(reversed(labels.items()))),  # same series
        Metric(time, "web-01", NAME, 50.0, {"core": "1", "env": "prod"}),  # another series
    ], uuid.uuid4()))
    assert values_at(empty, time, labels=(("core", "0"),)) == {
        "avg": 20.0, "min": 20.0, "max": 20.0, "sum": 20.0, "count": 1.0, "last": 20.0,
        "p50": 20.0, "p95": 20.0, "p99": 20.0}
    # Across series of one bucket, equal times: ``last`` is the greatest value.
    assert values_at(empty, time)["last"] == 50.0
    assert values_at(empty, time)["count"] == 2.0
    assert [(v.labels, v.value) for v in empty.fleet.latest(time)] == \
        [(labels, 20.0), ({"core": "1", "env": "prod"}, 50.0)]


def test_a_later_batch_replaces_the_value_of_the_same_series_and_time(
        empty: Repositories) -> None:
    time = recent_time()
    later = time + timedelta(seconds=1)
    for value in (70.0, 90.0, 10.0):  # the last write wins, not the greatest value
        empty.metrics.insert_batch(MetricBatch("web-01", [
            Metric(time, "web-01", NAME, value, {"core": "0"}),
            Metric(later, "web-01", NAME, value + 1, {"core": "0"})], uuid.uuid4()))
    assert values_at(empty, time) == {
        "avg": 10.5, "min": 10.0, "max": 11.0, "sum": 21.0, "count": 2.0, "last": 11.0,
        "p50": 10.5, "p95": pytest.approx(10.95), "p99": pytest.approx(10.99)}
    # The same instant in another zone is the same time.
    local = timezone(-timedelta(hours=3, minutes=30))
    empty.metrics.insert_batch(MetricBatch("web-01", [
        Metric(later.astimezone(local), "web-01", NAME, 5.0, {"core": "0"})]))
    assert values_at(empty, time)["count"] == 2.0
    assert [v.value for v in empty.fleet.latest(time)] == [5.0]
    top = empty.metrics.top(TopQuery(NAME, time, later, agg="sum"))
    assert top == [HostValue("web-01", 15.0)]
    # Another host's same series name, labels and time is another series.
    empty.metrics.insert_batch(MetricBatch("web-02", [
        Metric(time, "web-02", NAME, 1.0, {"core": "0"})]))
    assert values_at(empty, time)["sum"] == 15.0
    assert values_at(empty, time, host="web-02")["sum"] == 1.0


# --- TimescaleDB: materialized rollups follow the rewrites once refreshed -------------------

def refresh_rollups(url: str, until: datetime) -> None:
    """What the refresh policies do: materialize both rollups up to ``until``."""
    with psycopg.connect(url, autocommit=True) as conn:
        for view in ROLLUP_VIEWS.values():
            conn.execute("CALL refresh_continuous_aggregate(%s, NULL, %s)", (view, until))


@pytest.mark.integration
@pytest.mark.timescaledb
@pytest.mark.parametrize("bucket", list(ROLLUP_VIEWS))
def test_materialized_rollups_follow_rewrites_once_refreshed(
        postgres_databases: Any, data: DataSet, rewritten_data: DataSet, bucket: str) -> None:
    """Rewrites of (series, time) already in a materialized bucket are in its rollup after the
    next refresh (TimescaleDB's invalidation of updated rows), with the replace rule."""
    url = postgres_databases.create()
    repos = open_repositories(config_for(url))
    try:
        if not repos.sync_retention(timedelta(days=30)):
            pytest.skip(NO_TIMESCALEDB)
        until = bucket_floor(datetime.now(UTC), timedelta(days=1))
        load(repos, data)
        refresh_rollups(url, until)
        for batch in rewritten_data.batches[len(data.batches):]:
            repos.metrics.insert_batch(batch)
        refresh_rollups(url, until)
        served = 0
        for host in HOSTS:
            for agg in AGGREGATES:
                for labels in LABEL_FILTERS.values():
                    wanted = query(rewritten_data, bucket, agg, host=host, labels=labels)
                    served += repos.metrics.serves_from_rollup(wanted)
                    assert_same(repos.metrics.query(wanted),
                                reference(rewritten_data.stored(), wanted))
        assert served >= len(HOSTS) * len(LABEL_FILTERS) * 5  # avg/min/max/sum/count at least
    finally:
        repos.close()
        postgres_databases.drop(url)
