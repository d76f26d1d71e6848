"""Cardinality attacks: a client that invents series or hosts without end (issue 9, item 3).

One contract over the fake, SQLite and PostgreSQL: ``MAX_SERIES_PER_HOST`` accepts exactly
its limit and refuses the next series with nothing of the batch stored; ``MAX_HOSTS`` the
same for hosts (metrics and logs); retention frees hosts and series so that churn does not
block a host for ever; concurrent writers on PostgreSQL never exceed the limit. The handler
test checks the 400 names ``metrics[i]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from miniobserv.config import ServerConfig
from miniobserv.model import LogBatch, LogEntry, Metric, MetricBatch
from miniobserv.server.app import create_app
from miniobserv.server.storage import open_repositories
from miniobserv.server.storage.base import AlertState, HostState, Repositories
from miniobserv.server.storage.postgres import PostgresRepositories
from miniobserv.server.storage.series import LimitExceeded, Limits
from miniobserv.server.storage.sqlite import SQLiteRepositories
from tests.fakes import FakeRepositories
from tests.server.api.conftest import SECRET, Tokens
from tests.server.storage.conftest import config_for, run_in_threads

STORES = ["fake", "sqlite", pytest.param("postgres", marks=pytest.mark.integration)]
NAME = "custom.requests"


def open_store(kind: str, request: pytest.FixtureRequest, limits: Limits) -> Repositories:
    if kind == "fake":
        fake = FakeRepositories()
        fake.metrics.limits = limits
        return fake
    url = request.getfixturevalue("sqlite_url" if kind == "sqlite" else "fresh_postgres_url")
    return open_repositories(replace(config_for(url), max_series_per_host=limits.max_series_per_host,
                                     max_hosts=limits.max_hosts))


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> Iterator[Any]:
    """``make(limits)`` opens the parametrized store with those limits (closed afterwards)."""
    opened: list[Repositories] = []

    def make(limits: Limits | None = None) -> Repositories:
        opened.append(open_store(request.param, request, limits or Limits()))
        return opened[-1]

    yield make
    for repos in opened:
        repos.close()


def metrics(host: str, ids: range | list[int], time: datetime | None = None) -> MetricBatch:
    """One point of each series ``custom.requests{id=<i>}`` of ``host``."""
    when = time or datetime.now(UTC) - timedelta(minutes=1)
    return MetricBatch(host, [Metric(when, host, NAME, 1.0, {"id": str(i)}) for i in ids])


def counts(repos: Repositories, host: str) -> tuple[int, int]:
    """(points, series) stored for ``host``."""
    if isinstance(repos, FakeRepositories):
        return (sum(1 for row in repos.metrics.rows if row.metric.host == host),
                sum(1 for key in repos.metrics.series if key[0] == host))
    return (scalar(repos, "SELECT count(*) FROM samples JOIN series ON series.id = samples.series_id"
                          " WHERE host = {}", host),
            scalar(repos, "SELECT count(*) FROM series WHERE host = {}", host))


def scalar(repos: Repositories, statement: str, *params: Any) -> int:
    if isinstance(repos, SQLiteRepositories):
        with repos.db.read() as conn:
            return int(conn.execute(statement.format("?"), params).fetchone()[0])
    assert isinstance(repos, PostgresRepositories)
    with repos.pool.connection() as conn:
        return int(conn.execute(statement.format("%s"), params).fetchone()[0])


def test_exactly_the_default_limit_is_accepted_and_one_more_refused(store: Any) -> None:
    repos = store()
    for start in range(0, 10_000, 1000):
        assert repos.metrics.insert_batch(metrics("web-01", range(start, start + 1000))) == 1000
    assert counts(repos, "web-01") == (10_000, 10_000)
    with pytest.raises(LimitExceeded) as refused:  # one known series, then the 10,001st
        repos.metrics.insert_batch(metrics("web-01", [5, 10_000]))
    assert str(refused.value) == \
        "metrics[1]: host web-01 would exceed MAX_SERIES_PER_HOST (10000 series)"
    assert refused.value.field == "metrics[1]"
    assert counts(repos, "web-01") == (10_000, 10_000)  # nothing of it stored
    repos.metrics.insert_batch(metrics("web-01", [0, 9_999]))  # known series still flow
    repos.metrics.insert_batch(metrics("web-02", [10_000]))  # the limit is per host
    assert counts(repos, "web-01") == (10_002, 10_000)


def test_existing_and_new_series_in_one_batch(store: Any) -> None:
    repos = store(Limits(max_series_per_host=5))
    repos.metrics.insert_batch(metrics("web-01", [0, 1, 2]))
    with pytest.raises(LimitExceeded) as refused:  # room for 2 new: the third new one is over
        repos.metrics.insert_batch(metrics("web-01", [0, 3, 1, 4, 4, 5, 6]))
    assert refused.value.field == "metrics[5]"
    assert counts(repos, "web-01") == (3, 3)
    repos.metrics.insert_batch(metrics("web-01", [0, 3, 1, 4, 4, 2]))  # exactly 5 series
    # One value per (series, time): the second "4" replaced the first (issue 10).
    assert counts(repos, "web-01") == (8, 5)


def test_a_refused_batch_with_a_batch_id_can_be_sent_again(store: Any) -> None:
    import uuid

    repos = store(Limits(max_series_per_host=1))
    batch = replace(metrics("web-01", [1, 2]), batch_id=uuid.uuid4())
    with pytest.raises(LimitExceeded):
        repos.metrics.insert_batch(batch)
    with pytest.raises(LimitExceeded):  # the claim was rolled back: still refused, not acked
        repos.metrics.insert_batch(batch)
    assert counts(repos, "web-01") == (0, 0)


def test_max_hosts_counts_new_hosts_of_metrics_and_logs(store: Any) -> None:
    repos = store(Limits(max_hosts=2))
    repos.metrics.insert_batch(metrics("web-01", [1]))
    entry = LogEntry(datetime.now(UTC), "web-02", "info", "hello")
    repos.logs.insert_batch(LogBatch("web-02", [entry]))  # the second host, by its logs
    for refused_batch in (metrics("web-03", [1]),
                          LogBatch("web-03", [replace(entry, host="web-03")])):
        with pytest.raises(LimitExceeded) as refused:
            (repos.metrics if isinstance(refused_batch, MetricBatch) else repos.logs) \
                .insert_batch(refused_batch)
        assert str(refused.value) == "host: web-03 would exceed MAX_HOSTS (2 hosts)"
    assert repos.metrics.hosts() == ["web-01", "web-02"]
    assert counts(repos, "web-03") == (0, 0)
    repos.metrics.insert_batch(metrics("web-02", [1]))  # known hosts go on
    repos.logs.insert_batch(LogBatch("web-01", [replace(entry, host="web-01")]))


def test_retention_removes_hosts_states_and_series_and_frees_the_limit(store: Any) -> None:
    repos = store(Limits(max_series_per_host=2))
    repos.metrics.insert_batch(metrics("web-01", [1, 2]))
    now = datetime.now(UTC)
    state = AlertState("rule", "web-01", {}, "firing", 1.0, now, now, "firing")
    repos.fleet.save_cycle([state], [HostState("web-01", True, now)], [], ["rule"])
    fleet = repos.fleet
    fleet.delete_expired(now - timedelta(hours=1), now - timedelta(hours=1), now)
    assert [seen.host for seen in fleet.last_seen()] == ["web-01"]  # seen within retention
    assert counts(repos, "web-01") == (2, 2) and len(fleet.host_states()) == 1
    later = now + timedelta(hours=2)  # as if METRICS_RETENTION passed without a batch
    fleet.delete_expired(later, later, later)
    assert fleet.last_seen() == [] and repos.metrics.hosts() == []
    assert fleet.host_states() == [] and fleet.alert_states() == []
    # The points of removed series answer no query. On TimescaleDB a retention policy drops
    # whole chunks of them later, not delete_expired: they stay in samples until then.
    assert counts(repos, "web-01") == (0, 0)
    if not isinstance(repos, FakeRepositories):
        left = 2 if repos.sync_retention(timedelta(days=30)) else 0
        assert scalar(repos, "SELECT count(*) FROM samples") == left
    repos.metrics.insert_batch(metrics("web-01", [3, 4]))  # churned labels: room again
    assert counts(repos, "web-01") == (2, 2)


def test_alert_states_without_data_for_the_retention_are_removed(store: Any) -> None:
    repos = store()
    repos.metrics.insert_batch(metrics("web-01", [1]))
    now = datetime.now(UTC)
    old = now - timedelta(days=31)
    states = [AlertState("rule", "web-01", {"id": "1"}, "no_data", None, old, now),
              AlertState("rule", "web-01", {"id": "2"}, "no_data", None, now, now),
              AlertState("rule", "web-01", {"id": "3"}, "ok", 1.0, old, now)]
    repos.fleet.save_cycle(states, [], [], ["rule"])
    repos.fleet.delete_expired(now - timedelta(days=30), now, now)
    assert sorted(s.labels["id"] for s in repos.fleet.alert_states()) == ["2", "3"]


@pytest.mark.integration
def test_concurrent_writers_never_exceed_the_limit_on_postgres(
        fresh_postgres_url: str) -> None:
    limit, writers, batches = 50, 8, 8
    config = replace(config_for(fresh_postgres_url), max_series_per_host=limit)
    stores = [open_repositories(config) for _ in range(writers)]  # a pool and ledger each
    accepted: list[int] = []
    try:
        def write(worker: int) -> None:
            for n in range(batches):
                first = (worker * batches + n) * 2
                try:
                    stores[worker].metrics.insert_batch(metrics("web-01", [first, first + 1]))
                    accepted.append(2)
                except LimitExceeded:
                    pass

        assert run_in_threads(write, writers) == []
        assert counts(stores[0], "web-01") == (sum(accepted), limit)
    finally:
        for repos in stores:
            repos.close()


def test_the_ingest_answer_names_the_metric_and_the_limit() -> None:
    repos = FakeRepositories()
    repos.metrics.limits = Limits(max_series_per_host=2)
    config = ServerConfig(agent_token=SECRET, auto_migrate=False, max_series_per_host=2)
    client = create_app(config, repos).test_client()
    when = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    body = {"host": "web-01", "metrics": [
        {"time": when, "host": "web-01", "name": NAME, "value": 1, "labels": {"id": str(i)}}
        for i in (1, 1, 2, 3)]}
    response = client.post("/api/v1/metrics", data=json.dumps(body),
                           headers={**Tokens(SECRET).auth("ingest"),
                                    "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.get_json() == {
        "error": "metrics[3]: host web-01 would exceed MAX_SERIES_PER_HOST (2 series)"}
    assert repos.metrics.stored() == [] and repos.metrics.series == {}
