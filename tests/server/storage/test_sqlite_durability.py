"""202 means durable on SQLite: every connection the store opens commits with
``synchronous=FULL`` (2) in WAL mode, so each COMMIT fsyncs the WAL before the API answers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime

import pytest

from miniobserv.model import LogBatch, LogEntry, Metric, MetricBatch
from miniobserv.server.storage import open_repositories
from miniobserv.server.storage.sqlite import SQLiteRepositories
from tests.server.storage.conftest import config_for

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA
HELD = 5  # connections held at once, so the pool has to open new ones


@pytest.fixture
def sqlite_repos(sqlite_url: str) -> Iterator[SQLiteRepositories]:
    repos = open_repositories(config_for(sqlite_url))
    assert isinstance(repos, SQLiteRepositories)
    try:
        yield repos
    finally:
        repos.close()


def _modes(repos: SQLiteRepositories) -> list[tuple[int, str]]:
    """(synchronous, journal_mode) of HELD connections of the store, held at once."""
    with ExitStack() as stack:
        conns = [stack.enter_context(repos.db.connection()) for _ in range(HELD)]
        assert len({id(conn) for conn in conns}) == HELD
        return [(conn.execute("PRAGMA synchronous").fetchone()[0],
                 conn.execute("PRAGMA journal_mode").fetchone()[0]) for conn in conns]


def test_every_connection_commits_with_synchronous_full(
        sqlite_repos: SQLiteRepositories) -> None:
    assert _modes(sqlite_repos) == [(FULL, "wal")] * HELD


def test_connections_opened_by_writers_in_threads_are_full(
        sqlite_repos: SQLiteRepositories) -> None:
    """Writes through each repository, from several threads, then every pooled connection."""
    at = datetime(2026, 6, 1, tzinfo=UTC)
    errors: list[Exception] = []

    def write(index: int) -> None:
        try:
            host = f"h{index}"
            sqlite_repos.metrics.insert_batch(MetricBatch(host, [
                Metric(at, host, "cpu.usage_pct", float(index), {"core": "total"})]))
            sqlite_repos.logs.insert_batch(LogBatch(host, [LogEntry(at, host, "info", "x")]))
        except Exception as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(HELD)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _modes(sqlite_repos) == [(FULL, "wal")] * HELD
