"""Server restarts under ingest (issue 11): SIGTERM to gunicorn, SIGKILL of a worker
mid-batch, a real agent through an outage and a restart.

gunicorn runs the shipped config (``-c python:miniobserv.server.gunicorn_conf``, 2 workers)
on a database of the session's PostgreSQL. A batch is caught *inside* its transaction for
real: a test session holds the row lock of the batch's host in ``hosts``, so the batch's
transaction (claim and COPY done, not committed) waits at its last statement, which
``pg_stat_activity`` shows; the fault is injected then, and the lock released.

Counting is as in the database outage test (:mod:`tests.integration.faultkit`): every batch
made, every answer, and the points stored per batch.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import requests

from miniobserv.tokens import mint_token
from tests.agent.helpers import SECRET, free_port
from tests.integration.faultkit import (
    POINTS,
    BatchSender,
    Load,
    base_time,
    make_batch,
    point_counts,
    spool_rows,
    stored_counts,
    tally,
    wait_until,
)
from tests.processes import CONFIG_ARGS, Gunicorn, LoggedProcess, start_agent

pytestmark = pytest.mark.integration

SENDERS = 4
LIVENESS_S = 90.0  # bounds on waits for progress: liveness, not speed requirements
STOPPED = re.compile(r"agent stopped: (\d+) batches sent, (\d+) dropped, (\d+) lost, "
                     r"drops: (.*)$", re.MULTILINE)
KEPT = re.compile(r"spool: (\d+) batches kept for the next start")


def serve(database_url: str, port: int) -> Gunicorn:
    server = Gunicorn(database_url, port=port, args=CONFIG_ARGS,
                      env={"LOG_LEVEL": "INFO", "SHUTDOWN_TIMEOUT": "5s"})
    server.wait_ready()
    return server


class HostLock:
    """A session holding the row lock of ``host`` in ``hosts``: that host's next batch
    waits inside its transaction, at its last statement, until :meth:`release`."""

    def __init__(self, database_url: str, host: str) -> None:
        self.conn = psycopg.connect(database_url)
        row = self.conn.execute("SELECT host FROM hosts WHERE host = %s FOR UPDATE",
                                (host,)).fetchone()
        assert row is not None, f"{host} has no row in hosts yet"
        self.database_url = database_url

    def waiting(self) -> list[tuple[int, int]]:
        """``(backend pid, client port)`` of the server's sessions waiting for a lock."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid, client_port FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'miniobserv' AND wait_event_type = 'Lock'").fetchall()
        return [(int(pid), int(port)) for pid, port in rows]

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()
            self.conn.close()


def worker_with_port(master_pid: int, port: int) -> psutil.Process:
    """The gunicorn worker owning the local end ``port`` of a database connection."""
    for child in psutil.Process(master_pid).children():
        if any(c.laddr and c.laddr.port == port for c in child.net_connections("tcp")):
            return child
    raise AssertionError(f"no worker of {master_pid} has a connection from port {port}")


def post(url: str, batch: Any, timeout: float = 60.0) -> int | str:
    """One POST of ``batch``: its status, or the exception's name."""
    headers = {"Authorization": f"Bearer {mint_token(SECRET, scope='ingest')}"}
    try:
        return requests.post(url + "/api/v1/metrics", json=batch.to_json(), headers=headers,
                             timeout=timeout).status_code
    except requests.RequestException as err:
        return type(err).__name__


def check_senders(load: Load, url: str, database_url: str, label: str) -> None:
    counted = tally(url, database_url, load.senders)
    attempts = load.attempts
    refused = sorted({a.error for a in attempts if a.status is not None} - {None})
    print(f"\n[{label}] made {counted.made}, acknowledged {counted.acknowledged}, stored once "
          f"{counted.stored_once}, partial/repeated {len(counted.partial_or_repeated)}, lost "
          f"{counted.lost}; attempts {len(attempts)}: "
          f"{sum(a.status == 202 for a in attempts)} answered 202, "
          f"{sum(a.status is None for a in attempts)} refused or cut "
          f"({sorted({str(a.error) for a in attempts if a.status is None})}) {refused}")
    assert {a.status for a in attempts} <= {202, None}, sorted({str(a.status) for a in attempts})
    assert counted.acknowledged == counted.made
    assert counted.partial_or_repeated == {}
    assert counted.missing_acknowledged == counted.unclaimed_acknowledged == 0
    assert counted.stored_unmade == 0
    assert counted.stored_once == counted.made


def hold_under_load(server: Gunicorn, database_url: str, label: str,
                    host: str) -> tuple[Load, HostLock, datetime]:
    """Batch 0 of ``host`` stored (its ``hosts`` row exists); senders delivering; that row
    locked, so the host's next batch will wait inside its transaction."""
    base = base_time()
    assert post(server.url, make_batch(host, base, 0)) == 202
    load = Load(server.url, label, SENDERS, LIVENESS_S)
    assert load.wait_delivered(count=10)
    return load, HostLock(database_url, host), base


def test_sigterm_to_the_master_during_ingest(fresh_postgres_url: str) -> None:
    """In-flight requests finish (the batch held inside its transaction is answered 202 and
    stored whole); later ones are refused (connection refused/reset), never half-done; a new
    server on the same port takes the retries."""
    port = free_port()
    first = serve(fresh_postgres_url, port)
    second: Gunicorn | None = None
    load: Load | None = None
    held_host = "sigterm-held"
    try:
        load, lock, base = hold_under_load(first, fresh_postgres_url, "sigterm", held_host)
        held: list[int | str] = []
        held_batch = make_batch(held_host, base, 1)
        thread = threading.Thread(target=lambda: held.append(post(first.url, held_batch)))
        try:
            thread.start()
            assert wait_until(lambda: bool(lock.waiting()), LIVENESS_S)
            first.proc.send_signal(signal.SIGTERM)
            assert first.wait_for("Handling signal: term", LIVENESS_S), first.output[-2000:]
            time.sleep(1.0)  # the workers are shutting down, the held request still in flight
            assert first.proc.poll() is None, "the master did not wait for its request"
            assert claims_of(fresh_postgres_url, held_batch.batch_id) == 0  # not committed
        finally:
            lock.release()
        thread.join(LIVENESS_S)
        assert held == [202], held  # finished, not cut
        assert first.proc.wait(LIVENESS_S) == 0, first.output[-3000:]
        second = serve(fresh_postgres_url, port)
        restarted = time.monotonic()
        assert load.wait_delivered(restarted)
        load.finish()
        assert stored_counts(second.url, held_host, base, 2) == {0: POINTS, 1: POINTS}
        check_senders(load, second.url, fresh_postgres_url, "SIGTERM to the master")
        assert "Traceback" not in first.output + second.output
    finally:
        if load is not None:
            load.abort()
        first.terminate()
        if second is not None:
            assert second.terminate() == 0, second.output[-3000:]


def claims_of(database_url: str, batch_id: Any) -> int:
    """Committed claims of ``batch_id`` (written in the batch's own transaction)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM ingested_batches WHERE batch_id = %s",
                           (batch_id,)).fetchone()
    return int(row[0]) if row else 0


def test_sigkill_of_a_worker_mid_batch(fresh_postgres_url: str) -> None:
    """The worker running a batch's transaction is SIGKILLed before its commit: nothing of
    the batch is stored; the sender's retry (same batch_id) stores it once, whole."""
    port = free_port()
    server = serve(fresh_postgres_url, port)
    load: Load | None = None
    victim_host = "sigkill-held"
    try:
        load, lock, base = hold_under_load(server, fresh_postgres_url, "sigkill", victim_host)
        # The victim: an agent Sender (counting its attempts) sending batch 1 of the host.
        victim = BatchSender(server.url, victim_host, base, threading.Event())
        held = make_batch(victim_host, victim.base, 1)
        result: list[str] = []
        thread = threading.Thread(target=lambda: result.append(victim.sender.send(held).outcome))
        try:
            thread.start()
            assert wait_until(lambda: bool(lock.waiting()), LIVENESS_S)
            [(backend, client_port)] = lock.waiting()
            worker = worker_with_port(server.proc.pid, client_port)
            worker.send_signal(signal.SIGKILL)
            worker.wait(30)
            assert wait_until(lambda: server.output.count("Booting worker") == 3, LIVENESS_S)
            # Killed mid-transaction: nothing of batch 1 is committed or visible.
            assert claims_of(fresh_postgres_url, held.batch_id) == 0
            assert stored_counts(server.url, victim_host, victim.base, 2) == {0: POINTS}
        finally:
            lock.release()
        thread.join(LIVENESS_S)
        assert result == ["sent"], result
        failed = [a for a in victim.attempts if a.status is None]
        assert failed, "the killed worker's request was answered?"
        assert stored_counts(server.url, victim_host, victim.base, 2) == {0: POINTS, 1: POINTS}
        assert claims_of(fresh_postgres_url, held.batch_id) == 1
        assert load.wait_delivered(time.monotonic())
        load.finish()
        check_senders(load, server.url, fresh_postgres_url, "SIGKILL of a worker")
        print(f"[SIGKILL of a worker] the held batch: attempts {len(victim.attempts)} "
              f"({[a.status or a.error for a in victim.attempts]}), stored once, whole")
        assert server.output.count("Booting worker") == 3  # the killed one was replaced
    finally:
        if load is not None:
            load.abort()
        assert server.terminate() == 0, server.output[-3000:]


def test_a_real_agent_through_an_outage_and_a_restart(fresh_postgres_url: str,
                                                      tmp_path: Path) -> None:
    """``python -m miniobserv.agent`` (1 s, spool on) while gunicorn is stopped for 15 s,
    started, then restarted: every collection is made and stored once, whole."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    host = "restart-agent"
    since = datetime.now(UTC) - timedelta(minutes=1)
    servers: list[Gunicorn] = [serve(fresh_postgres_url, port)]
    spool_dir = tmp_path / "spool"
    agent: LoggedProcess = start_agent(url, AGENT_HOST=host, SPOOL_DIR=str(spool_dir),
                                       LOG_STATE_DIR=str(tmp_path / "state"),
                                       SHUTDOWN_TIMEOUT="15s")
    try:
        assert agent.wait_for("agent started"), agent.output
        time.sleep(5)
        assert servers[0].terminate() == 0  # the outage
        outage_from = datetime.now(UTC)
        time.sleep(15)
        servers.append(serve(fresh_postgres_url, port))
        outage_to = datetime.now(UTC)
        time.sleep(5)
        assert servers[1].terminate() == 0  # a restart: stopped, started at once
        servers.append(serve(fresh_postgres_url, port))
        # Caught up: the spool is empty and the newest collections are stored.
        assert wait_until(lambda: spool_rows(spool_dir) == 0 and any(
            datetime.fromisoformat(t.replace("Z", "+00:00")) > datetime.now(UTC)
            - timedelta(seconds=20) for t in point_counts(url, host, "mem.used_pct", since)),
            LIVENESS_S * 2, interval=1.0), agent.output[-3000:]
        time.sleep(3)
        assert agent.terminate(60) == 0, agent.output[-3000:]
        stopped = STOPPED.search(agent.output)
        assert stopped is not None, agent.output[-3000:]
        sent, dropped, lost, drops = (int(stopped.group(1)), int(stopped.group(2)),
                                      int(stopped.group(3)), stopped.group(4))
        kept = sum(int(k) for k in KEPT.findall(agent.output))
        with psycopg.connect(fresh_postgres_url) as conn:
            claims = conn.execute("SELECT count(*) FROM ingested_batches"
                                  " WHERE kind = 'metrics'").fetchone()
        totals = {name: sum(point_counts(url, host, name, since, "1h", label).values())
                  for name, label in (("cpu.usage_pct", "core:total"), ("mem.used_pct", None),
                                      ("load.avg_1m", None), ("system.uptime_seconds", None))}
        buckets = point_counts(url, host, "cpu.usage_pct", since, label="core:total")
        times = sorted(datetime.fromisoformat(t.replace("Z", "+00:00")) for t in buckets)
        gaps = [b for a, b in zip(times, times[1:], strict=False) if b - a > timedelta(seconds=10)]
        print(f"\n[real agent, 15 s outage + restart] made {sent + dropped + lost + kept} "
              f"(sent {sent}, dropped {dropped}, lost {lost}, kept in spool {kept}, drops "
              f"{drops}); claims {claims[0] if claims else None}; points per name {totals}; "
              f"10 s buckets {len(buckets)}, gaps {len(gaps)}; outage from {outage_from:%T}")
        assert (dropped, lost, kept, drops) == (0, 0, 0, "none")
        assert claims == (sent,)  # every batch acknowledged has its claim, once
        assert set(totals.values()) == {sent}, totals  # each collection stored once, whole
        assert gaps == []  # it kept collecting through the outage and the restart
        assert min(times) <= outage_from and max(times) + timedelta(seconds=10) >= outage_to
    finally:
        if agent.proc.poll() is None:
            agent.terminate(30)
        for server in servers:
            if server.proc.poll() is None:
                server.terminate()
