"""Helpers of the bounded-cost tests (issue 9, item 2): an app over fakes, tokens, stores."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask.testing import FlaskClient

from miniobserv.config import ServerConfig
from miniobserv.server.app import create_app
from miniobserv.server.storage import open_repositories
from miniobserv.server.storage.base import Repositories
from miniobserv.tokens import mint_token
from tests.fakes import FakeRepositories

SECRET = "bounded-cost-secret-0123456789abcdef"
STORES = ["fake", "sqlite", pytest.param("postgres", marks=pytest.mark.integration)]


def test_client(repos: Any | None = None, **settings: Any) -> FlaskClient:
    """Flask's test client of ``create_app`` over ``repos`` (fakes by default)."""
    config = ServerConfig(agent_token=SECRET, auto_migrate=False, **settings)
    app = create_app(config, repos if repos is not None else FakeRepositories())
    app.testing = True
    return app.test_client()


test_client.__test__ = False  # type: ignore[attr-defined]  # not a test, despite its name


def auth(scope: str | None = "read") -> dict[str, str]:
    """A Bearer header with a fresh token of ``scope`` (both scopes with None)."""
    return {"Authorization": f"Bearer {mint_token(SECRET, scope=scope, issuer='miniobserv')}"}


@contextmanager
def opened_store(store: str, request: pytest.FixtureRequest) -> Iterator[Repositories]:
    """An empty, migrated store of the kind ``store`` (fake, sqlite or postgres)."""
    if store == "fake":
        yield FakeRepositories()
        return
    url = request.getfixturevalue("sqlite_url" if store == "sqlite" else "fresh_postgres_url")
    opened = open_repositories(ServerConfig(agent_token=SECRET, database_url=url))
    try:
        yield opened
    finally:
        opened.close()
