"""The pool's checkout: no round trip in the steady state, yet a dead connection is noticed.

What goes to the server is read from libpq's own trace of the connection (every message the
client sends, one line each), so "no round trip" is what the wire carried.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from miniobserv.model import Metric, MetricBatch
from miniobserv.server.storage.postgres import PostgresRepositories
from miniobserv.server.storage.postgres import db as postgres_db

pytestmark = pytest.mark.integration

TIMEOUT = timedelta(seconds=7)


@pytest.fixture
def repos(fresh_postgres_url: str) -> Iterator[PostgresRepositories]:
    """One pooled connection only, so every checkout takes the same one while it lives."""
    opened = PostgresRepositories(fresh_postgres_url, min_size=1, max_size=1,
                                  statement_timeout=TIMEOUT).open()
    opened.pool.wait()
    try:
        yield opened
    finally:
        opened.close()


@contextmanager
def sent_messages(conn: psycopg.Connection[object]) -> Iterator[list[str]]:
    """The message types the client sends on ``conn`` inside the block (libpq's trace).

    ``conn`` may be idle in the pool: with one connection, the block's checkouts take it,
    and the pool's own check is traced too.
    """
    seen: list[str] = []
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        try:
            yield seen
        finally:
            conn.pgconn.untrace()
            os.lseek(trace.fileno(), 0, os.SEEK_SET)
            for line in trace.read().splitlines():
                fields = line.split("\t")
                if "F" in fields:  # [timestamp] F length Type ...
                    seen.append(fields[fields.index("F") + 2].split()[0])


def pooled(repos: PostgresRepositories) -> psycopg.Connection[object]:
    """The pool's one connection, after a first checkout (which sets its timeout)."""
    with repos.pool.connection() as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("7s",)
    return conn


def backend_pid(repos: PostgresRepositories) -> int:
    with repos.pool.connection() as conn:
        return conn.info.backend_pid


def a_batch(host: str, start: datetime, count: int = 40) -> MetricBatch:
    return MetricBatch(host, [Metric(start + timedelta(seconds=i), host, "cpu.usage_pct",
                                     float(i), {"core": str(i % 4)}) for i in range(count)],
                       uuid.uuid4())


def test_a_connection_used_a_moment_ago_is_taken_without_a_round_trip(
        repos: PostgresRepositories) -> None:
    conn = pooled(repos)
    with sent_messages(conn) as sent, repos.pool.connection() as again:
        assert again is conn
    assert sent == []
    with repos.pool.connection() as conn:  # ... and it still carries the timeout
        assert conn.execute("SHOW statement_timeout").fetchone() == ("7s",)


def test_a_steady_state_batch_is_one_round_trip(repos: PostgresRepositories) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    repos.metrics.insert_batch(a_batch("web-01", start))  # series created, ids cached
    with sent_messages(pooled(repos)) as sent:
        assert repos.metrics.insert_batch(a_batch("web-01", start + timedelta(minutes=1))) \
            == 40
    # One statement in the extended protocol: [Parse], Bind, [Describe], Execute, Sync.
    assert sent.count("Sync") == 1, sent
    assert "Query" not in sent, sent


def test_a_terminated_backend_is_noticed_at_checkout(repos: PostgresRepositories,
                                                     fresh_postgres_url: str) -> None:
    first = backend_pid(repos)
    with psycopg.connect(fresh_postgres_url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (first,)).fetchone() == (True,)
        # The server ends the session with a message before closing the socket; wait for it.
        admin.execute("SELECT pg_sleep(0.2)")
    with repos.pool.connection() as conn:  # a fresh connection, not an error
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.info.backend_pid != first
        assert conn.execute("SHOW statement_timeout").fetchone() == ("7s",)


def test_a_batch_after_a_terminated_backend_is_stored(repos: PostgresRepositories,
                                                      fresh_postgres_url: str) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    repos.metrics.insert_batch(a_batch("web-01", start))
    with psycopg.connect(fresh_postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (backend_pid(repos),))
        admin.execute("SELECT pg_sleep(0.2)")
    assert repos.metrics.insert_batch(a_batch("web-01", start + timedelta(minutes=1))) == 40
    with psycopg.connect(fresh_postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM samples").fetchone() == (80,)


def test_a_connection_idle_past_the_bound_is_checked_by_a_round_trip(
        repos: PostgresRepositories, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = pooled(repos)
    monkeypatch.setattr(postgres_db, "IDLE_CHECK_S", 0.0)
    with sent_messages(conn) as sent, repos.pool.connection():
        pass
    assert sent != []  # idle for longer than 0 s: a statement went to the server


def test_unbounded_statements_still_change_the_timeout_and_back(
        repos: PostgresRepositories) -> None:
    pooled(repos)
    with repos.unbounded_statements(), repos.pool.connection() as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
    with repos.pool.connection() as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("7s",)


def test_a_connection_with_data_waiting_is_not_quiet(repos: PostgresRepositories,
                                                     fresh_postgres_url: str) -> None:
    conn = pooled(repos)
    session = postgres_db.Session(conn, None, 0.0)
    assert session.is_quiet(conn)
    with psycopg.connect(fresh_postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        admin.execute("SELECT pg_sleep(0.2)")
    assert not session.is_quiet(conn)
