"""One repository contract, three stores: the fake, SQLite and a real PostgreSQL (SPEC §3, §7).

Expected answers are computed here from the raw points by a small reference implementation
of SPEC §3 (epoch-aligned buckets, inclusive window, percentile_cont), never hard-coded.
"""

from __future__ import annotations

import itertools
import math
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from miniobserv.model import Metric, MetricBatch
from miniobserv.server.storage import migrate, open_repositories
from miniobserv.server.storage.base import (
    AGGREGATES,
    BUCKETS,
    PERCENTILES,
    BatchConflict,
    MetricQuery,
    Point,
    Repositories,
    Series,
    StorageError,
    StorageUnavailable,
)
from miniobserv.server.storage.postgres import db as postgres_db
from tests.conftest import ThrowawayCluster, find_pg_bindir
from tests.fakes import FakeRepositories
from tests.server.storage.conftest import (
    STORES,
    assert_unavailable,
    config_for,
    run_in_threads,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
HOST, NAME = "web-01", "cpu.usage_pct"
# Deliberately not aligned to any bucket: the first bucket of every width starts before it.
START = datetime(2024, 3, 10, 11, 57, 23, 123456, tzinfo=UTC)
END = START + timedelta(hours=30, microseconds=1234)

SELECTIONS: dict[str, dict[str, Any]] = {
    "all": {},
    "core=total": {"labels": (("core", "total"),)},
    "core=0,env=prod": {"labels": (("core", "0"), ("env", "prod"))},
    "by-core": {"group_by": "core"},
    "env=prod,by-core": {"labels": (("env", "prod"),), "group_by": "core"},
}


# --- the data set ---------------------------------------------------------------------------

def make_points(seed: int = 20240310) -> list[Metric]:
    """Irregular points of several series, with bursts, shared times and window edges."""
    rng = random.Random(seed)
    points: list[Metric] = []
    time = START - timedelta(minutes=3)
    while time <= END + timedelta(minutes=3):
        env = rng.choice(["prod", "dev"])
        cores = ["total", "0", "1"]
        burst = 4 if rng.random() < 0.15 else 1  # several points within seconds
        for offset in range(burst):  # distinct times: one value per (series, time)
            t = time + timedelta(seconds=4 * offset + (rng.randint(0, 3) if offset else 0))
            for core in cores:  # same time for every core: ties for "last" without a filter
                value = round(rng.uniform(0, 100), rng.choice([0, 2, 6]))
                points.append(Metric(t, HOST, NAME, value, {"core": core, "env": env}))
        if rng.random() < 0.1:
            points.append(Metric(time + US * 7, HOST, NAME, rng.uniform(0, 100)))  # no labels
        time += timedelta(seconds=rng.randint(60, 900), microseconds=rng.randint(0, 999999))
    for edge in (START - US, START, END, END + US):  # inclusive window, just-outside excluded
        points.append(Metric(edge, HOST, NAME, rng.uniform(0, 100), {"core": "total"}))
    points.append(Metric(START + timedelta(minutes=5), "web-02", NAME, 1.0, {"core": "total"}))
    points.append(Metric(START + timedelta(minutes=5), HOST, "mem.used_pct", 2.0))
    return points


def batches_of(points: Sequence[Metric], size: int = 1000) -> Iterator[MetricBatch]:
    for host, group in itertools.groupby(sorted(points, key=lambda m: m.host),
                                         key=lambda m: m.host):
        host_points = list(group)
        for i in range(0, len(host_points), size):
            yield MetricBatch(host, host_points[i:i + size], uuid.uuid4())


POINTS = make_points()


# --- the reference implementation of SPEC §3 ----------------------------------------------

def reference(points: Sequence[Metric], query: MetricQuery) -> list[Series]:
    """What every store must answer, computed naively from the raw points."""
    groups: dict[str, list[Metric]] = defaultdict(list)
    for m in points:
        if m.host == query.host and m.name == query.name and query.start <= m.time <= query.end \
                and all(m.labels.get(k) == v for k, v in query.labels) \
                and (query.group_by is None or query.group_by in m.labels):
            groups[m.labels[query.group_by] if query.group_by else ""].append(m)
    if query.group_by is None:
        return [Series({}, reference_points(groups.get("", []), query))]
    return [Series({query.group_by: key}, reference_points(groups[key], query))
            for key in sorted(groups)]


def reference_points(points: list[Metric], query: MetricQuery) -> list[Point]:
    width_us = query.bucket_seconds * 1_000_000
    buckets: dict[int, list[Metric]] = defaultdict(list)
    for m in points:
        micros = (m.time - EPOCH) // US
        buckets[micros - micros % width_us].append(m)
    return [Point(EPOCH + start * US, reference_value(query.agg, buckets[start]))
            for start in sorted(buckets)]


def reference_value(agg: str, points: list[Metric]) -> float:
    values = sorted(m.value for m in points)
    if agg in PERCENTILES:  # percentile_cont: linear between the closest ranks
        rank = PERCENTILES[agg] * (len(values) - 1)
        low, high = values[math.floor(rank)], values[math.ceil(rank)]
        return low + (high - low) * (rank - math.floor(rank))
    if agg == "last":  # the newest point; equal times: the greatest value
        return max(points, key=lambda m: (m.time, m.value)).value
    return {"avg": lambda: math.fsum(values) / len(values), "min": lambda: values[0],
            "max": lambda: values[-1], "sum": lambda: math.fsum(values),
            "count": lambda: float(len(values))}[agg]()


def assert_same(actual: list[Series], expected: list[Series]) -> None:
    """Same series, same bucket times exactly, values equal up to float rounding."""
    assert [dict(s.labels) for s in actual] == [dict(s.labels) for s in expected]
    for got, want in zip(actual, expected, strict=True):
        assert [p.time for p in got.points] == [p.time for p in want.points]
        assert all(p.time.utcoffset() == timedelta(0) for p in got.points)
        assert [p.value for p in got.points] == pytest.approx(
            [p.value for p in want.points], rel=1e-9, abs=1e-9)


def query_of(bucket: str = "1m", agg: str = "avg", **kwargs: Any) -> MetricQuery:
    fields: dict[str, Any] = {"host": HOST, "name": NAME, "start": START, "end": END}
    return MetricQuery(bucket=bucket, agg=agg, **{**fields, **kwargs})


# --- stores ---------------------------------------------------------------------------------

def loaded_store(url: str) -> Repositories:
    opened = open_repositories(config_for(url))
    for batch in batches_of(POINTS):
        assert opened.metrics.insert_batch(batch) == len(batch.metrics)
    return opened


@pytest.fixture(scope="module")
def loaded_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repositories]:
    url = f"sqlite:///{tmp_path_factory.mktemp('contract') / 'loaded.db'}"
    migrate.upgrade(url)
    opened = loaded_store(url)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def loaded_postgres(postgres_databases: Any) -> Iterator[Repositories]:
    url = postgres_databases.create()
    opened = loaded_store(url)
    yield opened
    opened.close()
    postgres_databases.drop(url)


@pytest.fixture(scope="module")
def loaded_fake() -> Repositories:
    fake = FakeRepositories()
    for batch in batches_of(POINTS):
        fake.metrics.insert_batch(batch)
    return fake


@pytest.fixture(scope="module", params=STORES)
def loaded(request: pytest.FixtureRequest) -> Repositories:
    """A store holding POINTS, shared by the read-only tests of this module."""
    return request.getfixturevalue(f"loaded_{request.param}")  # type: ignore[no-any-return]


# --- queries against the reference ----------------------------------------------------------

def test_the_data_set_exercises_the_edges() -> None:
    """Guard the data: ties, bursts, edges and unlabeled points are really there."""
    assert {START - US, START, END, END + US} <= {m.time for m in POINTS}
    assert max(Counter(m.time for m in POINTS).values()) >= 3  # ties for "last"
    assert any(not m.labels for m in POINTS)
    per_10s = reference(POINTS, query_of("10s", "count", labels=(("core", "total"),)))
    assert max(p.value for p in per_10s[0].points) >= 3  # percentiles really interpolate
    assert reference(POINTS, query_of("1h", "count"))[0].points[0].time < START


@pytest.mark.parametrize("selection", SELECTIONS, ids=str)
@pytest.mark.parametrize("agg", AGGREGATES)
@pytest.mark.parametrize("bucket", BUCKETS)
def test_query_matches_reference(loaded: Repositories, bucket: str, agg: str,
                                 selection: str) -> None:
    query = query_of(bucket, agg, **SELECTIONS[selection])
    expected = reference(POINTS, query)
    assert sum(len(s.points) for s in expected) > 0
    assert_same(loaded.metrics.query(query), expected)


def test_buckets_are_epoch_aligned_and_start_before_the_window(loaded: Repositories) -> None:
    for bucket, seconds in BUCKETS.items():
        points = loaded.metrics.query(query_of(bucket, "count"))[0].points
        first = points[0].time
        assert first <= START < first + timedelta(seconds=seconds)
        assert all((p.time - EPOCH) % timedelta(seconds=seconds) == timedelta(0) for p in points)
        assert [p.time for p in points] == sorted({p.time for p in points})  # ascending, unique


def test_nothing_matches(loaded: Repositories) -> None:
    for kwargs in ({"host": "nobody"}, {"name": "mem.used_bytes"},
                   {"labels": (("core", "0"), ("core", "1"))},  # same key twice: no series has both
                   {"labels": (("missing_key", "x"),)},
                   {"start": END + 2 * US, "end": END + timedelta(hours=1)}):
        assert loaded.metrics.query(query_of(**kwargs)) == [Series({}, [])]
    assert loaded.metrics.query(query_of(group_by="missing_key")) == []


@pytest.mark.integration
def test_stores_answer_identically(loaded_sqlite: Repositories,
                                   loaded_postgres: Repositories) -> None:
    for bucket, agg, selection in itertools.product(BUCKETS, AGGREGATES, SELECTIONS):
        query = query_of(bucket, agg, **SELECTIONS[selection])
        assert_same(loaded_sqlite.metrics.query(query), loaded_postgres.metrics.query(query))


# --- writes ---------------------------------------------------------------------------------

def count_stored(repos: Repositories, host: str = HOST, name: str = NAME) -> int:
    query = MetricQuery(host, name, EPOCH, datetime(2100, 1, 1, tzinfo=UTC), "1d", "count")
    return int(sum(p.value for p in repos.metrics.query(query)[0].points))


def batch(n: int, host: str = HOST, batch_id: uuid.UUID | None = None,
          start: datetime = START) -> MetricBatch:
    return MetricBatch(host, [Metric(start + timedelta(seconds=i), host, NAME, float(i),
                                     {"core": str(i % 4)}) for i in range(n)], batch_id)


def test_insert_then_query_round_trip(repos: Repositories) -> None:
    stored = batch(1000)
    assert repos.metrics.insert_batch(stored) == 1000
    for agg in AGGREGATES:
        query = query_of("10s", agg, labels=(("core", "1"),))
        assert len(reference(stored.metrics, query)[0].points) == 101  # START is mid-bucket
        assert_same(repos.metrics.query(query), reference(stored.metrics, query))


def test_duplicate_batch_id_is_acknowledged_and_stored_once(repos: Repositories) -> None:
    batch_id = uuid.uuid4()
    assert repos.metrics.insert_batch(batch(10, batch_id=batch_id)) == 10
    assert repos.metrics.insert_batch(batch(10, batch_id=batch_id)) == 10
    assert count_stored(repos) == 10
    later = [START + timedelta(minutes=i) for i in (1, 2, 3)]
    assert repos.metrics.insert_batch(batch(10, batch_id=uuid.uuid4(), start=later[0])) == 10
    assert repos.metrics.insert_batch(batch(10, start=later[1])) == 10  # no batch_id: no dedup
    assert repos.metrics.insert_batch(batch(10, start=later[2])) == 10
    assert count_stored(repos) == 40


def test_retry_with_other_offset_and_label_order_is_acknowledged(
        repos: Repositories) -> None:
    """The digest is over the records as stored: the same instant in another zone and the
    same labels in another order are the same batch."""
    batch_id = uuid.uuid4()
    points = [replace(m, labels={**m.labels, "z": "1"}) for m in batch(3).metrics]
    assert repos.metrics.insert_batch(MetricBatch(HOST, points, batch_id)) == 3
    local = timezone(-timedelta(hours=3, minutes=30))
    same = [replace(m, time=m.time.astimezone(local), labels=dict(reversed(m.labels.items())))
            for m in points]
    assert list(same[0].labels) == ["z", "core"]
    assert repos.metrics.insert_batch(MetricBatch(HOST, same, batch_id)) == 3
    assert count_stored(repos) == 3


def changed(metrics: Sequence[Metric], index: int, **change: Any) -> list[Metric]:
    """``metrics`` with one field of ``metrics[index]`` replaced."""
    return [replace(m, **change) if i == index else m for i, m in enumerate(metrics)]


CHANGES: dict[str, Callable[[Sequence[Metric]], list[Metric]]] = {
    "value": lambda ms: changed(ms, 1, value=ms[1].value + 0.5),
    "time": lambda ms: changed(ms, 2, time=ms[2].time + US),
    "name": lambda ms: changed(ms, 0, name="mem.used_pct"),
    "label value": lambda ms: changed(ms, 0, labels={"core": "total"}),
    "label added": lambda ms: changed(ms, 0, labels={**ms[0].labels, "x": "y"}),
    "label key": lambda ms: changed(ms, 0, labels={"cpu": ms[0].labels["core"]}),
    "one point fewer": lambda ms: list(ms[:-1]),
    "one point more": lambda ms: [*ms, replace(ms[0], time=ms[0].time - US)],
    "order": lambda ms: list(reversed(ms)),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_reused_batch_id_with_other_points_is_a_conflict(repos: Repositories,
                                                         change: str) -> None:
    batch_id = uuid.uuid4()
    first = batch(4, batch_id=batch_id)
    assert repos.metrics.insert_batch(first) == 4
    other = MetricBatch(HOST, CHANGES[change](first.metrics), batch_id)
    with pytest.raises(BatchConflict) as raised:
        repos.metrics.insert_batch(other)
    assert (raised.value.batch_id, raised.value.kind) == (batch_id, "metrics")
    assert count_stored(repos) == 4
    assert repos.metrics.insert_batch(first) == 4  # the true retry is still acknowledged
    assert count_stored(repos) == 4


def test_reused_batch_id_from_another_host_is_a_conflict(repos: Repositories) -> None:
    """SPEC §2: a batch_id reused by another host must not make its batch vanish."""
    batch_id = uuid.uuid4()
    assert repos.metrics.insert_batch(batch(2, host="h1", batch_id=batch_id)) == 2
    with pytest.raises(BatchConflict):
        repos.metrics.insert_batch(batch(2, host="h2", batch_id=batch_id))
    assert count_stored(repos, host="h2") == 0
    assert repos.metrics.hosts() == ["h1"]


def test_concurrent_batches_with_one_id_store_it_once(repos: Repositories) -> None:
    """Same id at once: the same batch is stored once; other content at once is refused."""
    same_id, reused_id = uuid.uuid4(), uuid.uuid4()
    outcomes: list[str] = []

    def send(worker: int) -> None:
        repos.metrics.insert_batch(batch(200, batch_id=same_id))
        try:
            repos.metrics.insert_batch(batch(50, host=f"h{worker}", batch_id=reused_id))
            outcomes.append(f"h{worker}")
        except BatchConflict:
            outcomes.append("conflict")

    assert run_in_threads(send, 6) == []
    assert count_stored(repos) == 200
    [stored_host] = [host for host in outcomes if host != "conflict"]
    assert outcomes.count("conflict") == 5
    assert repos.metrics.hosts() == sorted({HOST, stored_host})
    assert count_stored(repos, host=stored_host) == 50


def test_hosts_are_sorted_and_unique(repos: Repositories) -> None:
    assert repos.metrics.hosts() == []
    names = ["web-10", "Web-02", "alpha", "web-2", "web-10", "ünicode", "_x"]
    for host in names:
        repos.metrics.insert_batch(batch(1, host=host))
    assert repos.metrics.hosts() == sorted(set(names))


def test_window_is_inclusive_and_empty_buckets_are_omitted(repos: Repositories) -> None:
    t0 = datetime(2024, 1, 1, 10, 0, 5, tzinfo=UTC)
    times = [t0 - US, t0, t0 + timedelta(seconds=30), t0 + timedelta(minutes=20), t0 +
             timedelta(minutes=20, microseconds=1)]
    repos.metrics.insert_batch(MetricBatch(HOST, [Metric(t, HOST, NAME, float(i))
                                                  for i, t in enumerate(times)]))
    query = MetricQuery(HOST, NAME, t0, times[3], "1m", "count")
    assert repos.metrics.query(query) == [Series({}, [
        Point(t0.replace(second=0), 2.0), Point(t0.replace(minute=20, second=0), 1.0)])]
    last = MetricQuery(HOST, NAME, t0, times[3], "1m", "last")
    assert [p.value for p in repos.metrics.query(last)[0].points] == [2.0, 3.0]


# Per store, metrics that the store refuses (server-side where possible).
BAD_METRICS: dict[str, list[Callable[[], Metric]]] = {
    "fake": [lambda: Metric(START, HOST, NAME, math.nan),
             lambda: Metric(START, HOST, NAME, 1.0, {"k": "a\x00b"})],
    "sqlite": [lambda: Metric(START, HOST, NAME, math.nan),  # SQLite stores NaN as NULL
               lambda: Metric(START, HOST, NAME, None)],  # type: ignore[arg-type]
    "postgres": [lambda: Metric(START, HOST, NAME, 1.0, {"k": "a\x00b"}),  # jsonb refuses \u0000
                 lambda: Metric(START, HOST, NAME, None),  # type: ignore[arg-type]
                 lambda: Metric(START, HOST + "\x00", NAME, 1.0)],  # refused by the driver
}


def test_failing_batch_stores_nothing(repos: Repositories, store: str) -> None:
    for make_bad in BAD_METRICS[store]:
        good = batch(1000).metrics
        bad = MetricBatch(HOST, [*good[:600], make_bad(), *good[600:999]], uuid.uuid4())
        with pytest.raises(StorageError):
            repos.metrics.insert_batch(bad)
        assert count_stored(repos) == 0
        assert repos.metrics.hosts() == []
    retry = MetricBatch(HOST, batch(5).metrics, bad.batch_id)  # its id was not recorded
    assert repos.metrics.insert_batch(retry) == 5
    assert count_stored(repos) == 5


def test_concurrent_batches_are_all_stored(repos: Repositories) -> None:
    def send(worker: int) -> None:
        for i in range(5):
            start = START + timedelta(hours=worker, minutes=2 * i)  # 100 s each, apart
            repos.metrics.insert_batch(batch(100, host=f"h{worker}", start=start,
                                             batch_id=uuid.uuid4()))

    assert run_in_threads(send, 4) == []
    assert [count_stored(repos, host=f"h{w}") for w in range(4)] == [500] * 4
    assert repos.metrics.hosts() == ["h0", "h1", "h2", "h3"]


def test_ping_answers(repos: Repositories) -> None:
    repos.ping()


def test_a_metric_of_another_host_is_refused_whole(repos: Repositories) -> None:
    """The API refuses such a batch; a store given one anyway writes nothing (its series
    would be the batch host's), the same on every store."""
    good = batch(3, host="h1", start=START)
    mixed = replace(good, metrics=[*good.metrics[:2], replace(good.metrics[2], host="h2")])
    with pytest.raises(StorageError, match=r"metrics\[2\]\.host"):
        repos.metrics.insert_batch(mixed)
    assert count_stored(repos, host="h1") == 0 and repos.metrics.hosts() == []


# --- failures of the database itself --------------------------------------------------------

def test_unreachable_postgres_is_unavailable(unreachable_postgres: Repositories) -> None:
    opened = unreachable_postgres
    assert_unavailable([opened.ping, lambda: opened.metrics.insert_batch(batch(1)),
                        lambda: opened.metrics.query(query_of()), opened.metrics.hosts])


def test_unreadable_sqlite_is_unavailable(tmp_path: Any) -> None:
    opened = open_repositories(config_for(f"sqlite:///{tmp_path / 'missing' / 'x.db'}"))
    assert_unavailable([opened.ping, lambda: opened.metrics.insert_batch(batch(1))])


@pytest.mark.integration
def test_postgres_outage_then_recovery(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped database: StorageUnavailable; started again: the same pool serves again."""
    monkeypatch.setattr(postgres_db, "POOL_TIMEOUT_S", 1.0)
    bindir = find_pg_bindir()
    if bindir is None:
        pytest.skip("needs a local PostgreSQL to stop and start")
    cluster = ThrowawayCluster(bindir, timescaledb=False)
    try:
        url = cluster.start()
        migrate.upgrade(url)
        opened = open_repositories(config_for(url))
        opened.metrics.insert_batch(batch(3))
        cluster.stop_server()
        assert_unavailable([opened.ping, lambda: opened.metrics.insert_batch(batch(1))])
        cluster.start_server()
        deadline = time.monotonic() + 60  # a liveness bound, not a speed requirement
        while not _answers(opened) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert count_stored(opened) == 3
        opened.close()
    finally:
        cluster.destroy()


def _answers(repos: Repositories) -> bool:
    try:
        repos.ping()
    except StorageUnavailable:
        return False
    return True


# A statement trigger whose backend terminates itself: the connection is lost in the middle
# of the batch's write, after its claim (its first part) was made.
_KILL_ONCE = """CREATE FUNCTION kill_once() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_terminate_backend(pg_backend_pid());
        PERFORM pg_sleep(10);  -- the termination arrives during the sleep
        RETURN NULL;
    END $$;
    CREATE TRIGGER kill_once BEFORE INSERT ON samples
        FOR EACH STATEMENT EXECUTE FUNCTION kill_once()"""


@pytest.mark.integration
def test_postgres_connection_lost_mid_batch_stores_nothing(fresh_postgres_url: str) -> None:
    opened = open_repositories(config_for(fresh_postgres_url))
    try:
        for cached in (False, True):  # the first write of a series, then the steady state
            dropping = batch(1000, batch_id=uuid.uuid4())
            with psycopg.connect(fresh_postgres_url, autocommit=True) as admin:
                admin.execute(_KILL_ONCE)
            with pytest.raises(StorageUnavailable):
                opened.metrics.insert_batch(dropping)
            with psycopg.connect(fresh_postgres_url, autocommit=True) as admin:
                admin.execute("DROP TRIGGER kill_once ON samples; DROP FUNCTION kill_once()")
            assert count_stored(opened) == (0 if not cached else 3)
            if not cached:
                assert opened.metrics.hosts() == []
            # the claim was lost with the connection: the same batch_id stores
            assert opened.metrics.insert_batch(batch(3, batch_id=dropping.batch_id)) == 3
            assert count_stored(opened) == 3
    finally:
        opened.close()
