"""Fixtures of the storage tests: one empty store of each kind (contract suites), and the
PostgreSQL databases of the migration tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from miniobserv.config import ServerConfig
from miniobserv.server.storage import open_repositories, postgres
from miniobserv.server.storage.base import Repositories
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
        if not postgres.has_timescaledb(conn):
            pytest.skip(NO_TIMESCALEDB)
    return fresh_postgres_url
