"""PostgreSQL stopped while agents send, then started again (issue 11: database outage).

gunicorn with the shipped config (``-c python:miniobserv.server.gunicorn_conf``, 2 workers,
``REQUEST_TIMEOUT=3s``) on this module's own PostgreSQL cluster (the tests stop it, so not the
session's). Four agent-shaped senders (:class:`~tests.integration.faultkit.BatchSender`: the
agent's Sender with its backoff and ``batch_id``) send continuously; the cluster is stopped
with ``pg_ctl stop -m fast`` or ``-m immediate``, stays down about 10 s while they keep
sending (three one-shot posters besides), and is started again. Then:

- while down, ingest answered 503, each with ``Retry-After``, and ``/readyz`` 503 with it (a
  one-shot poster sends a new batch every 0.25 s, never retried: it sees every answer);
- no request went unanswered within REQUEST_TIMEOUT plus a margin (the client's bound: a
  hang would be an exception here), and gunicorn kept every worker;
- the same pools served again by themselves (no server restart);
- every batch answered 202 is stored exactly once, no batch is stored partly, and every batch
  the senders held during the outage was delivered: made = acknowledged = stored once.

A second test starts the server while the database is down: ``/readyz`` and ingest answer
503 (with ``Retry-After``) until it is up, then the held batches are delivered the same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from miniobserv.server.api.errors import STORAGE_RETRY_AFTER_S
from tests.conftest import ThrowawayCluster, find_pg_bindir, with_database
from tests.integration.faultkit import (
    BatchSender,
    Load,
    OneShotPoster,
    Tally,
    base_time,
    status_of,
    tally,
    wait_until,
)
from tests.processes import CONFIG_ARGS, Gunicorn

pytestmark = pytest.mark.integration

REQUEST_TIMEOUT_S = 3
CLIENT_MARGIN_S = 7  # the client's bound on one request: REQUEST_TIMEOUT plus this
SENDERS = 4
OUTAGE_S = 10.0
LIVENESS_S = 90.0  # bounds on waits for progress: liveness, not speed requirements
RETRY_AFTER = str(STORAGE_RETRY_AFTER_S)


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[ThrowawayCluster, str]]:
    bindir = find_pg_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL's initdb/pg_ctl were not found: run ./scripts/test")
    # durable: PostgreSQL's own commit settings, so a crash (-m immediate) keeps what it
    # acknowledged, as in production (the suite's fast settings would lose commits).
    own = ThrowawayCluster(bindir, timescaledb=False, durable=True)
    try:
        yield own, own.start()
    finally:
        own.destroy()


@pytest.fixture
def database(cluster: tuple[ThrowawayCluster, str], request: pytest.FixtureRequest) -> str:
    """An empty database of this test (the server migrates it at start)."""
    own, admin = cluster
    if not own.is_running():  # a test that failed half-way left it stopped
        own.start_server()
    name = "outage_" + request.node.name.split("[")[-1].strip("]").replace("-", "_")[:40]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(admin, name)


def start_server(database_url: str) -> Gunicorn:
    return Gunicorn(database_url, args=CONFIG_ARGS,
                    env={"REQUEST_TIMEOUT": f"{REQUEST_TIMEOUT_S}s", "LOG_LEVEL": "INFO"})


class ReadyProbe(threading.Thread):
    """Asks ``/readyz`` every 0.25 s; keeps ``(time.monotonic(), status, Retry-After)``."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url + "/readyz"
        self.seen: list[tuple[float, int | None, str | None]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.25):
            status, retry_after = status_of(self.url, REQUEST_TIMEOUT_S + CLIENT_MARGIN_S)
            self.seen.append((time.monotonic(), status, retry_after))

    def between(self, start: float, end: float) -> list[tuple[int | None, str | None]]:
        return [(status, retry) for at, status, retry in self.seen if start <= at <= end]


def report(label: str, senders: list[BatchSender], counted: Tally, outage: tuple[float, float],
           ready_down: list[tuple[int | None, str | None]]) -> None:
    attempts = [a for s in senders for a in s.attempts]
    during = [a for a in attempts if outage[0] <= a.at <= outage[1] + REQUEST_TIMEOUT_S]
    statuses = sorted({str(a.status) for a in attempts})
    print(f"\n[{label}] made {counted.made}, acknowledged {counted.acknowledged}, stored once "
          f"{counted.stored_once}, partial/repeated {len(counted.partial_or_repeated)}, "
          f"lost {counted.lost}; attempts {len(attempts)} (statuses {statuses}), "
          f"503s {sum(a.status == 503 for a in attempts)}, answered during the outage "
          f"{len(during)}, longest attempt {max(a.seconds for a in attempts):.2f} s "
          f"(REQUEST_TIMEOUT {REQUEST_TIMEOUT_S} s); /readyz while down: "
          f"{sorted(set(ready_down), key=str)}")


def check_poster(poster: OneShotPoster, counted: Tally, outage: tuple[float, float]) -> None:
    """One-shot batches: each 202 stored once, none partly; the outage answered 503s."""
    during = [a for a in poster.attempts if outage[0] + 0.5 <= a.at <= outage[1]]
    print(f"[one-shot poster] {len(poster.made)} posted, {counted.acknowledged} answered 202,"
          f" {len(poster.made) - counted.acknowledged} not; stored once {counted.stored_once};"
          f" during the outage {len(during)} answers: "
          f"{sorted({(a.status, a.retry_after) for a in during}, key=str)},"
          f" longest {max((a.seconds for a in during), default=0):.2f} s")
    assert during and all((a.status, a.retry_after) == (503, RETRY_AFTER) for a in during), \
        sorted({(a.status, a.retry_after, a.error) for a in during}, key=str)
    assert not [a for a in poster.attempts if a.status is None]
    assert counted.partial_or_repeated == {}
    assert counted.missing_acknowledged == counted.unclaimed_acknowledged == 0
    assert counted.stored_unmade == 0
    assert counted.stored_once >= counted.acknowledged  # a 503 may hide a commit: not twice


def check(senders: list[BatchSender], counted: Tally, server: Gunicorn) -> None:
    """What holds after every outage: nothing lost, nothing twice, nothing partial."""
    attempts = [a for s in senders for a in s.attempts]
    errors = [a for a in attempts if a.status is None]
    assert not errors, f"requests without an answer (hung or refused): {errors[:5]}"
    assert {a.status for a in attempts} <= {202, 503}, sorted({a.status for a in attempts})
    unavailable = [a for a in attempts if a.status == 503]
    assert unavailable, "the outage was never seen by ingest"
    assert all(a.retry_after == RETRY_AFTER for a in unavailable), \
        {a.retry_after for a in unavailable}
    assert all(s.outcomes.keys() <= {"sent"} for s in senders), [s.outcomes for s in senders]
    assert counted.acknowledged == counted.made  # every batch held was delivered
    assert counted.partial_or_repeated == {}
    assert counted.missing_acknowledged == 0
    assert counted.unclaimed_acknowledged == 0
    assert counted.stored_unmade == 0
    assert counted.stored_once == counted.made
    assert "Traceback" not in server.output, server.output[-3000:]
    assert server.output.count("Booting worker") == 2, server.output[-3000:]  # none restarted


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_stopped_under_load_then_started(
        cluster: tuple[ThrowawayCluster, str], database: str, mode: str) -> None:
    own, _ = cluster
    server = start_server(database)
    probe = ReadyProbe(server.url)
    posters = [OneShotPoster(server.url, f"outage-{mode}-oneshot-{i}", base_time(),
                             timeout=REQUEST_TIMEOUT_S + CLIENT_MARGIN_S) for i in range(3)]
    load: Load | None = None
    try:
        server.wait_ready()
        probe.start()
        for poster in posters:
            poster.start()
        load = Load(server.url, f"outage-{mode}", SENDERS, LIVENESS_S,
                    timeout=REQUEST_TIMEOUT_S + CLIENT_MARGIN_S)
        senders = load.senders
        assert load.wait_delivered(count=15)
        down_at = time.monotonic()
        own.stop_server(mode)
        stopped_at = time.monotonic()  # pg_ctl -w returned: the server is down
        try:
            assert wait_until(lambda: any(s == 503 for s, _ in probe.between(
                down_at, time.monotonic())), LIVENESS_S)
            time.sleep(max(0.0, down_at + OUTAGE_S - time.monotonic()))
        finally:
            up_at = time.monotonic()
            own.start_server()
        assert load.wait_delivered(up_at), [s.acknowledged_since(up_at) for s in senders]
        assert wait_until(lambda: status_of(server.url + "/readyz")[0] == 200, LIVENESS_S)
        load.finish()
        for thread in (probe, *posters):
            thread.done.set()
            thread.join(REQUEST_TIMEOUT_S + CLIENT_MARGIN_S + 1)
        ready_down = probe.between(stopped_at + 0.5, up_at)
        counted = tally(server.url, database, senders)
        report(f"pg_ctl stop -m {mode}", senders, counted, (down_at, up_at), ready_down)
        check(senders, counted, server)
        for poster in posters:
            check_poster(poster, tally(server.url, database, [poster]), (stopped_at, up_at))
        assert ready_down and set(ready_down) == {(503, RETRY_AFTER)}, ready_down
    finally:
        probe.done.set()
        for poster in posters:
            poster.done.set()
        if load is not None:
            load.abort()
        assert server.terminate() == 0, server.output[-3000:]


def test_server_started_while_postgres_is_down(
        cluster: tuple[ThrowawayCluster, str], database: str) -> None:
    own, _ = cluster
    own.stop_server("fast")
    server: Gunicorn | None = None
    load: Load | None = None
    try:
        server = start_server(database)
        assert wait_until(lambda: status_of(server.url + "/readyz")[0] == 503, LIVENESS_S), \
            server.output
        assert status_of(server.url + "/readyz") == (503, RETRY_AFTER)
        assert status_of(server.url + "/healthz") == (200, None)
        down_at = time.monotonic()
        load = Load(server.url, "outage-startdown", SENDERS, LIVENESS_S,
                    timeout=REQUEST_TIMEOUT_S + CLIENT_MARGIN_S)
        senders = load.senders
        assert wait_until(lambda: all(any(a.status == 503 for a in s.attempts)
                                      for s in senders), LIVENESS_S)
        time.sleep(max(0.0, down_at + OUTAGE_S - time.monotonic()))
        assert not any(s.acknowledged for s in senders)
        assert status_of(server.url + "/readyz") == (503, RETRY_AFTER)
    finally:
        up_at = time.monotonic()
        own.start_server()
    try:
        assert wait_until(lambda: status_of(server.url + "/readyz")[0] == 200, LIVENESS_S)
        assert load.wait_delivered(up_at)
        load.finish()
        counted = tally(server.url, database, senders)
        report("started with PostgreSQL down", senders, counted, (down_at, up_at), [])
        check(senders, counted, server)
        assert "migrations done" in server.output
        assert "Worker failed to boot" not in server.output
    finally:
        if load is not None:
            load.abort()
        assert server.terminate() == 0, server.output[-3000:]
