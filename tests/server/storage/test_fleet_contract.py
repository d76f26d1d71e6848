"""The fleet repository contract over the fake, SQLite and a real PostgreSQL (SPEC §7).

Hosts' last-seen times, the newest point of every series (one query, filters, ties, label
spelling), alert state and host announcements round trips, the outbox's life cycle,
retention deletes and the deployment-wide leader lock.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from miniobserv.config import ServerConfig
from miniobserv.model import LogBatch, LogEntry, Metric, MetricBatch
from miniobserv.server.storage import open_repositories
from miniobserv.server.storage.base import (
    AlertState,
    HostState,
    LatestValue,
    MetricQuery,
    Outgoing,
    Repositories,
)
from tests.fakes import FakeRepositories

STORES = ["fake", "sqlite", pytest.param("postgres", marks=pytest.mark.integration)]
NOW = datetime.now(UTC).replace(microsecond=0)
EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
T0 = NOW - timedelta(minutes=10)


def config_for(url: str) -> ServerConfig:
    return ServerConfig(agent_token="x" * 32, database_url=url, db_pool_min=1, db_pool_max=4)


@pytest.fixture(params=STORES)
def repos(request: pytest.FixtureRequest) -> Iterator[Repositories]:
    if request.param == "fake":
        yield FakeRepositories()
        return
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite"
                                  else "fresh_postgres_url")
    opened = open_repositories(config_for(url))
    try:
        yield opened
    finally:
        opened.close()


def put(repos: Repositories, host: str, *points: tuple[str, float, datetime, dict[str, str]],
        ) -> None:
    metrics = [Metric(time, host, name, value, labels) for name, value, time, labels in points]
    repos.metrics.insert_batch(MetricBatch(host, metrics, uuid.uuid4()))


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# --- hosts and newest values ------------------------------------------------------------------

def test_last_seen_is_the_time_of_the_last_accepted_batch(repos: Repositories) -> None:
    before = datetime.now(UTC)
    put(repos, "web-02", ("mem.used_pct", 1.0, at(0), {}))
    put(repos, "web-01", ("mem.used_pct", 1.0, at(0), {}))
    seen = repos.fleet.last_seen()
    assert [s.host for s in seen] == ["web-01", "web-02"]
    assert all(before - timedelta(seconds=1) <= s.last_seen <= datetime.now(UTC)
               for s in seen)
    assert all(s.last_seen.utcoffset() == timedelta(0) for s in seen)


def test_latest_is_the_newest_point_of_every_series(repos: Repositories) -> None:
    total, core0 = {"core": "total"}, {"core": "0"}
    put(repos, "web-01", ("cpu.usage_pct", 10.0, at(1), total), ("cpu.usage_pct", 30.0, at(3), total),
        ("cpu.usage_pct", 20.0, at(2), total), ("cpu.usage_pct", 5.0, at(3), core0),
        ("mem.used_pct", 40.0, at(1), {}))
    put(repos, "web-02", ("cpu.usage_pct", 70.0, at(2), total))
    latest = repos.fleet.latest(at(0))
    assert latest == [
        LatestValue("web-01", "cpu.usage_pct", core0, at(3), 5.0),
        LatestValue("web-01", "cpu.usage_pct", total, at(3), 30.0),
        LatestValue("web-01", "mem.used_pct", {}, at(1), 40.0),
        LatestValue("web-02", "cpu.usage_pct", total, at(2), 70.0),
    ]


def test_latest_filters_and_window(repos: Repositories) -> None:
    total = {"core": "total", "env": "prod"}
    put(repos, "web-01", ("cpu.usage_pct", 1.0, at(1), total), ("cpu.usage_pct", 2.0, at(5), total),
        ("cpu.usage_pct", 3.0, at(5), {"core": "0"}), ("mem.used_pct", 4.0, at(5), {}))
    put(repos, "web-02", ("cpu.usage_pct", 9.0, at(1), total))
    fleet = repos.fleet
    assert [v.value for v in fleet.latest(at(0), name="cpu.usage_pct",
                                          labels=[("core", "total")])] == [2.0, 9.0]
    assert [v.value for v in fleet.latest(at(2), name="cpu.usage_pct",
                                          labels=[("core", "total")])] == [2.0]
    assert [v.value for v in fleet.latest(at(0), host="web-02")] == [9.0]
    assert fleet.latest(at(0), labels=[("core", "total"), ("env", "dev")]) == []
    assert fleet.latest(at(0), labels=[("core", "total"), ("core", "0")]) == []
    assert [v.time for v in fleet.latest(at(5))] == [at(5)] * 3  # the window is inclusive
    assert fleet.latest(at(5) + timedelta(microseconds=1)) == []


def test_latest_label_order_is_one_series(repos: Repositories) -> None:
    put(repos, "web-01", ("disk.used_pct", 1.0, at(1), {"mount": "/", "dev": "a"}),
        ("disk.used_pct", 7.0, at(3), {"mount": "/", "dev": "a"}),
        ("disk.used_pct", 3.0, at(2), {"dev": "a", "mount": "/"}))  # same set, other order
    assert repos.fleet.latest(at(0)) == [
        LatestValue("web-01", "disk.used_pct", {"dev": "a", "mount": "/"}, at(3), 7.0)]


# --- alert state and the outbox ------------------------------------------------------------

def state(rule: str, host: str, labels: dict[str, str], name: str = "firing",
          notified: str | None = "firing", value: float | None = 95.5) -> AlertState:
    return AlertState(rule, host, labels, name, value, at(1), at(2), notified)


def test_alert_and_host_states_round_trip_and_other_rules_are_forgotten(
        repos: Repositories) -> None:
    fleet = repos.fleet
    first = [state("r1", "web-01", {"core": "total"}), state("r2", "web-01", {}, "no_data",
                                                             None, None)]
    fleet.save_cycle(first, [HostState("web-09", True, at(3))], [], ["r1", "r2"])
    assert sorted(fleet.alert_states(), key=lambda s: s.rule_key) == first
    assert fleet.host_states() == [HostState("web-09", True, at(3))]
    updated = state("r1", "web-01", {"core": "total"}, "ok", "resolved", 12.0)
    fleet.save_cycle([updated], [HostState("web-09", False, at(4))], [], ["r1"])
    assert fleet.alert_states() == [updated]
    assert fleet.host_states() == [HostState("web-09", False, at(4))]
    fleet.save_cycle([], [], [], [])
    assert fleet.alert_states() == []


def test_outbox_life_cycle(repos: Repositories) -> None:
    fleet = repos.fleet
    payload = {"event": "firing", "host": "web-01", "rule": {"name": "cpu.usage_pct"},
               "value": 97.5, "at": "2026-06-05T10:00:00Z", "labels": {}}
    fleet.save_cycle([], [], [Outgoing("a", payload, at(0)), Outgoing("b", payload, at(0)),
                              Outgoing("a", {**payload, "event": "resolved"}, at(1))], [])
    items = fleet.pending_notifications()
    assert [(i.channel, i.payload["event"], i.attempts) for i in items] == \
        [("a", "firing", 0), ("b", "firing", 0), ("a", "resolved", 0)]
    assert items[0].payload == payload and items[0].next_attempt_at == at(0)
    assert items[0].id < items[1].id < items[2].id
    fleet.finish_notification(items[0].id, at(2), delivered=True)
    fleet.finish_notification(items[1].id, at(2), delivered=False, retry_at=at(3), error="500")
    fleet.finish_notification(items[2].id, at(2), delivered=False, error="gave up")
    left = fleet.pending_notifications()
    assert [(i.id, i.attempts, i.next_attempt_at) for i in left] == [(items[1].id, 1, at(3))]
    assert len(fleet.pending_notifications(limit=0)) == 0


@pytest.fixture(params=STORES)
def plain_repos(request: pytest.FixtureRequest) -> Iterator[Repositories]:
    """Stores whose retention is the maintenance job's: PostgreSQL without TimescaleDB."""
    if request.param != "postgres":
        yield request.getfixturevalue("repos_" + request.param)
        return
    databases = request.getfixturevalue("postgres_databases")
    url = databases.create(timescaledb=False)
    opened = open_repositories(config_for(url))
    try:
        yield opened
    finally:
        opened.close()
        databases.drop(url)


@pytest.fixture
def repos_fake() -> FakeRepositories:
    return FakeRepositories()


@pytest.fixture
def repos_sqlite(sqlite_url: str) -> Iterator[Repositories]:
    opened = open_repositories(config_for(sqlite_url))
    yield opened
    opened.close()


def test_delete_expired(plain_repos: Repositories) -> None:
    repos = plain_repos
    put(repos, "web-01", ("mem.used_pct", 1.0, at(1), {}), ("mem.used_pct", 2.0, at(5), {}))
    repos.logs.insert_batch(LogBatch("web-01", [
        LogEntry(at(1), "web-01", "info", "old"), LogEntry(at(5), "web-01", "info", "new")]))
    fleet = repos.fleet
    fleet.save_cycle([], [], [Outgoing("a", {"event": "firing"}, at(1))], [])
    fleet.finish_notification(fleet.pending_notifications()[0].id, at(1), delivered=True)
    deleted = fleet.delete_expired(at(3), at(3), at(3))
    assert deleted >= 2
    assert [v.value for v in fleet.latest(at(0))] == [2.0]
    assert fleet.pending_notifications() == []
    if not isinstance(repos, FakeRepositories):  # the fake keeps logs apart
        from miniobserv.server.storage.base import LogQuery

        assert [e.message for e in repos.logs.query(LogQuery()).entries] == ["new"]


def expired_and_fresh(repos: Repositories, before: datetime) -> dict[str, tuple[int, int]]:
    """Per series ``sid``: (samples older than ``before``, samples at or after it)."""
    counts: dict[str, tuple[int, int]] = {}
    for start, end, index in ((EPOCH_UTC, before - timedelta(microseconds=1), 0),
                              (before, NOW + timedelta(days=1), 1)):
        query = MetricQuery("web-01", "disk.used_pct", start, end, "1d", "count",
                            group_by="sid")
        for series in repos.metrics.query(query):
            pair = list(counts.get(series.labels["sid"], (0, 0)))
            pair[index] = int(sum(p.value for p in series.points))
            counts[series.labels["sid"]] = (pair[0], pair[1])
    return counts


RETAINED = {"a": (12_000, 5), "b": (0, 3), "c": (9_000, 0)}


def load_retained(repos: Repositories, before: datetime) -> None:
    """Series a and c with more expired samples than one retention chunk (10,000 rows)."""
    metrics = []
    for sid, (old, new) in RETAINED.items():
        metrics += [Metric(before - timedelta(seconds=i + 1), "web-01", "disk.used_pct",
                           float(i), {"sid": sid}) for i in range(old)]
        metrics += [Metric(before + timedelta(seconds=i), "web-01", "disk.used_pct",
                           float(i), {"sid": sid}) for i in range(new)]
    for i in range(0, len(metrics), 1000):
        repos.metrics.insert_batch(MetricBatch("web-01", metrics[i:i + 1000], uuid.uuid4()))


def test_delete_expired_samples_in_chunks(plain_repos: Repositories) -> None:
    repos = plain_repos
    before = NOW - timedelta(days=1)
    load_retained(repos, before)
    assert expired_and_fresh(repos, before) == RETAINED
    checks = []
    deleted = repos.fleet.delete_expired(before, before, before,
                                         should_stop=lambda: checks.append(1) is not None)
    assert deleted == 21_000  # nothing else had expired: hosts and series were seen now
    assert expired_and_fresh(repos, before) == {"a": (0, 5), "b": (0, 3)}
    if not isinstance(repos, FakeRepositories):
        assert len(checks) >= 3  # at least three chunks of samples
    assert [v.value for v in repos.fleet.latest(before) if v.labels["sid"] == "a"] == [4.0]


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres",
                                                          marks=pytest.mark.integration)])
def test_delete_expired_stops_between_chunks(store: str, request: pytest.FixtureRequest) -> None:
    databases = None if store == "sqlite" else request.getfixturevalue("postgres_databases")
    url = request.getfixturevalue("sqlite_url") if databases is None else \
        databases.create(timescaledb=False)  # plain PostgreSQL: the maintenance job deletes
    repos = open_repositories(config_for(url))
    try:
        before = NOW - timedelta(days=1)
        load_retained(repos, before)
        calls = []
        deleted = repos.fleet.delete_expired(
            before, before, before, should_stop=lambda: calls.append(1) is None and
            len(calls) > 1)
        assert deleted == 10_000  # one chunk, then the stop was seen
        left = expired_and_fresh(repos, before)
        assert sum(old for old, _ in left.values()) == 11_000
        assert sum(new for _, new in left.values()) == 8
    finally:
        repos.close()
        if databases is not None:
            databases.drop(url)


@pytest.mark.integration
@pytest.mark.timescaledb
def test_hypertables_are_left_to_timescaledb(fresh_postgres_url: str) -> None:
    repos = open_repositories(config_for(fresh_postgres_url))
    try:
        if not repos.has_timescaledb():  # type: ignore[attr-defined]
            pytest.skip("the timescaledb extension is not available on the test server")
        put(repos, "web-01", ("mem.used_pct", 1.0, at(1), {}))
        repos.fleet.delete_expired(at(3), at(3), at(3))
        assert [v.value for v in repos.fleet.latest(at(0))] == [1.0]  # a policy's job
    finally:
        repos.close()


# --- the leader lock -----------------------------------------------------------------------

def test_leader_lock_is_held_by_one_handle_at_a_time(repos: Repositories) -> None:
    first, second = repos.fleet.leader_lock(), repos.fleet.leader_lock()
    assert first.acquire()
    assert first.acquire()  # still held: re-entrant for its holder
    assert not second.acquire()
    first.release()
    assert second.acquire()
    assert not first.acquire()
    second.release()


LOCK_CHILD = """
import sys, time
from miniobserv.config import ServerConfig
from miniobserv.server.storage import open_repositories
repos = open_repositories(ServerConfig(agent_token="x" * 32, database_url=sys.argv[1]))
lock = repos.fleet.leader_lock()
print("held" if lock.acquire() else "refused", flush=True)
sys.stdin.readline()
"""


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres",
                                                         marks=pytest.mark.integration)])
def test_leader_lock_excludes_other_processes_until_the_holder_dies(
        kind: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("sqlite_url" if kind == "sqlite" else "fresh_postgres_url")
    child = subprocess.Popen([sys.executable, "-c", LOCK_CHILD, url], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdin is not None
    try:
        assert child.stdout.readline().strip() == "held"
        repos = open_repositories(config_for(url))
        lock = repos.fleet.leader_lock()
        assert not lock.acquire()
        child.kill()  # no release: the database or the kernel frees the lock with its holder
        child.wait(30)
        assert _eventually(lock.acquire)
        lock.release()
        repos.close()
    finally:
        child.kill()
        child.wait(30)


def _eventually(check: object, attempts: int = 100) -> bool:
    import time

    for _ in range(attempts):  # a liveness bound: PostgreSQL notices the dead session
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_payload_is_stored_as_json(repos: Repositories) -> None:
    payload = {"event": "host.down", "host": "wéb-01", "rule": None, "value": None,
               "at": "2026-06-05T10:00:00Z", "labels": {"k": "\"quoted\""}}
    repos.fleet.save_cycle([], [], [Outgoing("c", payload, at(0))], [])
    assert json.dumps(repos.fleet.pending_notifications()[0].payload, sort_keys=True) == \
        json.dumps(payload, sort_keys=True)
