"""Fixtures for handler tests: a real app from ``create_app`` over fake repositories."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient

from miniobserv.config import ServerConfig
from miniobserv.server.app import create_app
from miniobserv.tokens import mint_token
from tests.fakes import FakeRepositories

SECRET = "k3Jp9-wQz7.Lm2Vx8_Rt4Yb6Nc1Hd5Fg"  # 32 characters


class Tokens:
    """Mints good tokens and crafts bad ones for the app's secret."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    def mint(self, scope: str | None = None, ttl: timedelta = timedelta(hours=1),
             issuer: str = "miniobserv-agent", now: float | None = None) -> str:
        return mint_token(self.secret, ttl=ttl, scope=scope, issuer=issuer, now=now)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Valid claims, with keys set to None removed."""
        now = int(time.time())
        claims: dict[str, Any] = {"iss": "miniobserv-agent", "iat": now, "exp": now + 3600}
        claims.update(overrides)
        return {key: value for key, value in claims.items() if value is not None}

    def craft(self, key: Any = None, algorithm: str = "HS256", **overrides: Any) -> str:
        return jwt.encode(self.claims(**overrides), self.secret if key is None else key,
                          algorithm=algorithm)

    def signed_raw(self, **overrides: Any) -> str:
        """HS256 over claims pyjwt's encoder would refuse (e.g. a non-string ``iss``)."""
        payload = json.dumps(self.claims(**overrides)).encode()
        return jwt.PyJWS().encode(payload, self.secret, algorithm="HS256")

    def unsigned(self, alg: str = "none", **overrides: Any) -> str:
        """A token with ``alg`` in its header and no signature at all."""
        header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        payload = _b64(json.dumps(self.claims(**overrides)).encode())
        return f"{header}.{payload}."

    @staticmethod
    def header(token: str, scheme: str = "Bearer") -> dict[str, str]:
        return {"Authorization": f"{scheme} {token}"}

    def auth(self, scope: str | None = None) -> dict[str, str]:
        """An Authorization header with a fresh token (both scopes by default)."""
        return self.header(self.mint(scope))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def config() -> ServerConfig:
    return ServerConfig(agent_token=SECRET, auto_migrate=False)


@pytest.fixture
def repos() -> FakeRepositories:
    return FakeRepositories()


@pytest.fixture
def app(config: ServerConfig, repos: FakeRepositories) -> Iterator[Flask]:
    app = create_app(config, repos)
    app.testing = True
    yield app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def tokens(config: ServerConfig) -> Tokens:
    return Tokens(config.agent_token)
