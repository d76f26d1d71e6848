"""Series created by several processes at once (issue 10), on a real SQLite file and a real
PostgreSQL.

``WORKERS`` processes, each with its own repositories and series ledger, start every round
together (a barrier) and send batches whose series (and hosts) are new and shared: every
process creates the same series at the same moment, some series come from half of them only,
and one (series, time) is written by all of them with different values. Afterwards every
series exists once, exactly the expected set; every sample belongs to a stored series; the
counts per series are the points sent, the shared (series, time) holds one of the values.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Barrier

import psycopg
import pytest

from miniobserv.model import Metric, MetricBatch
from miniobserv.server.storage import open_repositories
from miniobserv.server.storage.base import MetricQuery
from miniobserv.server.storage.shaping import canonical_labels
from tests.server.storage.conftest import config_for

WORKERS = 4
ROUNDS = 5
HOSTS_PER_ROUND = 2
SHARED_SERIES = 12  # per host and round, created by every worker
NAMES = ("race.a", "race.b")
BARRIER_TIMEOUT_S = 120  # a liveness bound: a worker that never arrives fails the test


def host_of(round_: int, index: int) -> str:
    return f"race-{round_}-{index}"


def round_start(t0: datetime, round_: int) -> datetime:
    return t0 + timedelta(minutes=10 * round_)


def worker_points(t0: datetime, worker: int, round_: int, host: str) -> list[Metric]:
    """One worker's points of one round and host. Distinct times per worker (µs offsets)
    except the shared (series, time) at ``+9 min``, which every worker writes."""
    start = round_start(t0, round_)
    points = []
    for index in range(SHARED_SERIES):
        labels = {"round": str(round_), "sid": f"s{index}"}
        for step in range(3):
            time = start + timedelta(seconds=10 * step, microseconds=worker)
            points.append(Metric(time, host, NAMES[index % 2], float(step), labels))
    half = {"round": str(round_), "sid": f"half{worker % 2}"}  # from half of the workers
    points.append(Metric(start + timedelta(minutes=1, microseconds=worker), host, NAMES[0],
                         1.0, half))
    shared = {"round": str(round_), "sid": "s0"}
    points.append(Metric(shared_time(t0, round_), host, NAMES[0], 100.0 + worker, shared))
    return points


def shared_time(t0: datetime, round_: int) -> datetime:
    return round_start(t0, round_) + timedelta(minutes=9)


def send(url: str, t0: datetime, worker: int, barrier: Barrier) -> None:
    """One worker process: its own store and ledger, every round at the barrier's signal."""
    repos = open_repositories(config_for(url))
    try:
        for round_ in range(ROUNDS):
            barrier.wait(BARRIER_TIMEOUT_S)
            for index in range(HOSTS_PER_ROUND):
                host = host_of(round_, index)
                repos.metrics.insert_batch(MetricBatch(
                    host, worker_points(t0, worker, round_, host), uuid.uuid4()))
    finally:
        repos.close()


def expected_series() -> set[tuple[str, str, str]]:
    """(host, name, canonical labels) of every series the workers send."""
    t0 = datetime(2000, 1, 1, tzinfo=UTC)  # times do not matter here
    return {(m.host, m.name, canonical_labels(m.labels))
            for worker in range(WORKERS) for round_ in range(ROUNDS)
            for index in range(HOSTS_PER_ROUND)
            for m in worker_points(t0, worker, round_, host_of(round_, index))}


def expected_counts(t0: datetime) -> Counter[tuple[str, str, str]]:
    """Distinct times of each (host, name, sid)."""
    times: dict[tuple[str, str, str], set[datetime]] = {}
    for worker in range(WORKERS):
        for round_ in range(ROUNDS):
            for index in range(HOSTS_PER_ROUND):
                host = host_of(round_, index)
                for m in worker_points(t0, worker, round_, host):
                    times.setdefault((host, m.name, m.labels["sid"]), set()).add(m.time)
    return Counter({key: len(value) for key, value in times.items()})


def race(url: str, t0: datetime) -> None:
    context = multiprocessing.get_context("spawn")  # no inherited pools or locks
    barrier = context.Barrier(WORKERS)
    workers = [context.Process(target=send, args=(url, t0, worker, barrier))
               for worker in range(WORKERS)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(BARRIER_TIMEOUT_S * ROUNDS)
    codes = [process.exitcode for process in workers]
    for process in workers:
        if process.is_alive():
            process.kill()
    assert codes == [0] * WORKERS


_ORPHANS = """SELECT count(*) FROM samples AS s
    WHERE NOT EXISTS (SELECT 1 FROM series AS r WHERE r.id = s.series_id)"""


def stored_series_and_orphans(url: str) -> tuple[list[tuple[str, str, str]], int, int]:
    """Every series row (host, name, canonical labels), the samples without a series, and
    the samples."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///"):]) as conn:
            rows = conn.execute("SELECT host, name, labels_text FROM series").fetchall()
            orphans = conn.execute(_ORPHANS).fetchone()[0]
            samples = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
        return [tuple(row) for row in rows], orphans, samples
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT host, name, labels_text FROM series").fetchall()
        orphans = conn.execute(_ORPHANS).fetchone()[0]  # type: ignore[index]
        samples = conn.execute("SELECT count(*) FROM samples").fetchone()[0]  # type: ignore[index]
    return [tuple(row) for row in rows], orphans, samples


@pytest.fixture
def race_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated database of the parametrized kind, of this test alone."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_url")
        return
    if request.param == "timescaledb":
        yield request.getfixturevalue("timescale_url")
        return
    databases = request.getfixturevalue("postgres_databases")
    url = databases.create(timescaledb=False)
    yield url
    databases.drop(url)


@pytest.mark.integration
@pytest.mark.parametrize("race_url", ["sqlite", "postgres", pytest.param(
    "timescaledb", marks=pytest.mark.timescaledb)], indirect=True)
def test_series_created_by_racing_processes_exist_once(race_url: str) -> None:
    url = race_url
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    race(url, t0)

    rows, orphans, samples = stored_series_and_orphans(url)
    assert len(rows) == len(set(rows))  # each series once
    assert set(rows) == expected_series()  # none missing, none extra
    assert orphans == 0
    assert samples == sum(expected_counts(t0).values())

    repos = open_repositories(config_for(url))
    try:
        counted: Counter[tuple[str, str, str]] = Counter()
        values: dict[str, list[float]] = {"count": [], "max": []}
        end = round_start(t0, ROUNDS)
        for round_ in range(ROUNDS):
            for index in range(HOSTS_PER_ROUND):
                host = host_of(round_, index)
                for name in NAMES:
                    query = MetricQuery(host, name, t0, end, "1d", "count", group_by="sid")
                    for series in repos.metrics.query(query):
                        counted[(host, name, series.labels["sid"])] = \
                            int(sum(p.value for p in series.points))
                moment = shared_time(t0, round_)
                for agg in ("count", "max"):
                    shared = MetricQuery(host, NAMES[0], moment, moment, "10s", agg,
                                         labels=(("sid", "s0"),))
                    [point] = repos.metrics.query(shared)[0].points
                    values[agg].append(point.value)
        assert counted == expected_counts(t0)
        assert values["count"] == [1.0] * ROUNDS * HOSTS_PER_ROUND  # replaced, not added
        assert set(values["max"]) <= {100.0 + worker for worker in range(WORKERS)}
        assert repos.metrics.hosts() == sorted(host_of(r, i) for r in range(ROUNDS)
                                               for i in range(HOSTS_PER_ROUND))
    finally:
        repos.close()


def test_the_race_shares_series_and_one_sample() -> None:
    """Guard the workload: most series come from every worker, some from half of them,
    and one (series, time) per host and round from all."""
    t0 = datetime(2000, 1, 1, tzinfo=UTC)
    senders: dict[tuple[str, str, str], set[int]] = {}
    samples: Counter[tuple[str, str, str, datetime]] = Counter()
    for worker in range(WORKERS):
        for m in worker_points(t0, worker, 0, "h"):
            key = (m.host, m.name, canonical_labels(m.labels))
            senders.setdefault(key, set()).add(worker)
            samples[(*key, m.time)] += 1
    assert Counter(len(s) for s in senders.values()) == {WORKERS: SHARED_SERIES,
                                                          WORKERS // 2: 2}
    assert Counter(samples.values()) == {1: sum(samples.values()) - WORKERS, WORKERS: 1}
