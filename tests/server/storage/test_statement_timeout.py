"""REQUEST_TIMEOUT as PostgreSQL's statement_timeout of the pool's connections (SPEC §5)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from miniobserv.config import ServerConfig
from miniobserv.server.app import create_app
from miniobserv.server.storage import open_repositories
from miniobserv.server.storage.base import StorageUnavailable
from miniobserv.server.storage.postgres import PostgresRepositories
from miniobserv.server.storage.postgres.db import translate_errors
from miniobserv.tokens import mint_token

pytestmark = pytest.mark.integration

SECRET = "statement-timeout-secret-0123456789"


@pytest.fixture
def repos(fresh_postgres_url: str) -> Iterator[PostgresRepositories]:
    config = ServerConfig(agent_token=SECRET, database_url=fresh_postgres_url,
                          request_timeout=timedelta(seconds=1), auto_migrate=False)
    opened = open_repositories(config)
    assert isinstance(opened, PostgresRepositories)
    try:
        yield opened
    finally:
        opened.close()


def setting(repos: PostgresRepositories) -> str:
    with repos.pool.connection() as conn:
        row = conn.execute("SHOW statement_timeout").fetchone()
    assert row is not None
    return str(row[0])


def test_pooled_connections_carry_request_timeout(repos: PostgresRepositories) -> None:
    assert setting(repos) == "1s"
    with repos.pool.connection() as conn:  # also inside a transaction (autocommit off)
        assert not conn.autocommit
        assert conn.execute("SHOW statement_timeout").fetchone() == ("1s",)


def test_a_query_past_request_timeout_is_storage_unavailable(
        repos: PostgresRepositories) -> None:
    with pytest.raises(StorageUnavailable, match="statement timeout"):
        with translate_errors(), repos.pool.connection() as conn:
            conn.execute("SELECT pg_sleep(10)")
    assert setting(repos) == "1s"  # the connection went back to the pool in working order


def test_unbounded_statements_lift_it_for_this_thread_only(repos: PostgresRepositories) -> None:
    seen: list[str] = []
    with repos.unbounded_statements():
        assert setting(repos) == "0"
        worker = threading.Thread(target=lambda: seen.append(setting(repos)))
        worker.start()
        worker.join()
        with repos.pool.connection() as conn:
            conn.execute("SELECT pg_sleep(1.2)")  # past the 1s bound, not cut
    assert seen == ["1s"]
    assert setting(repos) == "1s"


def test_without_a_timeout_the_server_default_stays(fresh_postgres_url: str) -> None:
    repos = PostgresRepositories(fresh_postgres_url).open()
    try:
        assert setting(repos) == "0"
    finally:
        repos.close()


def test_migrations_are_not_cut(fresh_postgres_url: str) -> None:
    # The migration runs on its own connection: a pool with the least timeout leaves it be.
    from miniobserv.server.storage import migrate

    repos = PostgresRepositories(fresh_postgres_url,
                                 statement_timeout=timedelta(milliseconds=1)).open()
    try:
        migrate.downgrade(fresh_postgres_url, "base")
        migrate.upgrade(fresh_postgres_url)
        assert migrate.current_revision(fresh_postgres_url) == migrate.head_revision()
    finally:
        repos.close()


def test_a_query_cut_by_it_answers_503_json(fresh_postgres_url: str) -> None:
    config = ServerConfig(agent_token=SECRET, database_url=fresh_postgres_url,
                          request_timeout=timedelta(seconds=1), auto_migrate=False)
    repos = open_repositories(config)
    app = create_app(config, repos)
    app.testing = True
    now = datetime.now(UTC).replace(microsecond=0)
    bearer = mint_token(SECRET, scope="read", issuer="miniobserv")
    # A lock held elsewhere makes the metrics query wait past REQUEST_TIMEOUT. Without the
    # timeout the query would wait for ever: the lock holder's own statement_timeout ends it
    # (the test then fails instead of hanging).
    with psycopg.connect(fresh_postgres_url) as blocker:
        blocker.execute("LOCK TABLE samples IN ACCESS EXCLUSIVE MODE")
        blocker.execute("SET idle_in_transaction_session_timeout = '20s'")
        try:
            response = app.test_client().get(
                "/api/v1/metrics/query",
                query_string={"host": "web-01", "name": "cpu.usage_pct",
                              "from": (now - timedelta(hours=1)).isoformat(),
                              "to": now.isoformat(), "bucket": "1m", "agg": "avg"},
                headers={"Authorization": f"Bearer {bearer}"})
        finally:
            with contextlib.suppress(psycopg.Error):  # gone when the session timeout hit
                blocker.rollback()
            repos.close()
    assert response.status_code == 503
    assert response.get_json() == {"error": "storage unavailable"}
