"""Fixtures of the storage tests: one empty store of each kind, for the contract suites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from miniobserv.config import ServerConfig
from miniobserv.server.storage import open_repositories
from miniobserv.server.storage.base import Repositories
from tests.fakes import FakeRepositories

STORES = ["fake", "sqlite", pytest.param("postgres", marks=pytest.mark.integration)]


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
