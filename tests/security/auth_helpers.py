"""Shared by the auth attack tests: an app over fakes with chosen settings, and tokens."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from miniobserv.config import ServerConfig
from miniobserv.server.app import create_app
from tests.fakes import FakeRepositories
from tests.server.api.conftest import SECRET, Tokens

TOKENS = Tokens(SECRET)


def client_for(**settings: Any) -> FlaskClient:
    """A test client of ``create_app`` over fake repositories, ServerConfig(**settings)."""
    config = ServerConfig(agent_token=SECRET, auto_migrate=False, **settings)
    app = create_app(config, FakeRepositories())
    app.testing = True
    return app.test_client()
