"""Fixtures of the storage tests: one empty store of each kind (contract suites), and the
PostgreSQL databases of the migration tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import psycopg
import pytest

from miniobserv.config import ServerConfig
from miniobserv.server.storage import open_repositories
from miniobserv.server.storage.base import Repositories, StorageUnavailable
from miniobserv.server.storage.postgres import db as postgres_db
from tests.fakes import FakeRepositories

STORES = ["fake", "sqlite", pytest.param("postgres", marks=pytest.mark.integration)]
NO_TIMESCALEDB = "the timescaledb extension is not available on the test PostgreSQL server"


def config_for(url: str) -> ServerConfig:
    return ServerConfig(agent_token="x" * 32, database_url=url, db_pool_min=1, db_pool_max=4)


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def repos(store: str, request: pytest.FixtureRequest) -> Iterator[Repositories]:
    """An empty store of the parametrized kind, for one test."""
    if store == "fake":
        yield FakeRepositories()
        return
    url = request.getfixturevalue("sqlite_url" if store == "sqlite" else "fresh_postgres_url")
    opened = open_repositories(config_for(url))
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def empty_postgres_url(postgres_databases: Any) -> Iterator[str]:
    """A database of this test alone, not migrated, dropped afterwards."""
    url = postgres_databases.create(migrated=False)
    yield url
    postgres_databases.drop(url)


@pytest.fixture
def timescale_url(fresh_postgres_url: str) -> str:
    """``fresh_postgres_url`` where TimescaleDB is installed; elsewhere the test is skipped."""
    with psycopg.connect(fresh_postgres_url) as conn:
        if not postgres_db.has_timescaledb(conn):
            pytest.skip(NO_TIMESCALEDB)
    return fresh_postgres_url


@pytest.fixture
def unreachable_postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[Repositories]:
    """PostgreSQL repositories of a server that refuses connections; the pool waits 0.2 s."""
    monkeypatch.setattr(postgres_db, "POOL_TIMEOUT_S", 0.2)
    with socket_closed_port() as port:
        opened = open_repositories(config_for(f"postgresql://nobody@127.0.0.1:{port}/none"))
        try:
            yield opened
        finally:
            opened.close()


def assert_unavailable(calls: Iterable[Callable[[], object]]) -> None:
    """Every one of ``calls`` raises StorageUnavailable."""
    for call in calls:
        with pytest.raises(StorageUnavailable):
            call()


def run_in_threads(work: Callable[[int], object], count: int) -> list[BaseException]:
    """Run ``work(0)`` to ``work(count - 1)`` at once, a thread each; what they raised."""
    errors: list[BaseException] = []

    def run(worker: int) -> None:
        try:
            work(worker)
        except BaseException as err:  # noqa: BLE001 - returned to the caller
            errors.append(err)

    threads = [threading.Thread(target=run, args=(worker,)) for worker in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


class socket_closed_port:  # noqa: N801 - used as a context manager, reads as a phrase
    """A local TCP port on which nothing listens, for the duration of the block."""

    def __enter__(self) -> int:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
