"""The per-process memory of verified tokens (auth.VERIFIED_TOKENS): faster, never looser.

Defended here: a remembered token that expires is refused at its next use, exactly at the
leeway's edge; a refused token is never remembered and stays refused; the memory is bounded
(least recently used out); another AGENT_TOKEN, READ_SECRET or TOKEN_MAX_TTL verifies again,
so a remembered token never gains a scope or outlives a shorter TOKEN_MAX_TTL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import jwt
import pytest
from flask.testing import FlaskClient

from miniobserv.config import ServerConfig
from miniobserv.server.api import auth
from miniobserv.server.api.errors import ApiError
from miniobserv.server.app import create_app
from miniobserv.tokens import mint_token
from tests.fakes import FakeRepositories

SECRET = "agent-secret-of-32-characters-ab"
OTHER = "another-secret-32-characters-cde"
READ_SECRET = "r3ad-only-Secret-0f-32-characters"
QUERY = "/api/v1/metrics/query?host=web-01&name=cpu.usage_pct" \
        "&from=2026-06-05T10:00:00Z&to=2026-06-05T11:00:00Z"


@pytest.fixture(autouse=True)
def empty_memory() -> Iterator[None]:
    auth._verified.cache_clear()
    yield
    auth._verified.cache_clear()


def config(**changes: object) -> ServerConfig:
    return ServerConfig(**{"agent_token": SECRET, "database_url": "sqlite:///unused.db",
                           **changes})  # type: ignore[arg-type]


def status(error: pytest.ExceptionInfo[ApiError]) -> int:
    return error.value.status


def test_a_token_is_verified_once_then_remembered() -> None:
    token = mint_token(SECRET, scope="ingest")
    for _ in range(3):
        claims, grantable = auth.verify(token, config())
        assert claims["scope"] == "ingest"
        assert grantable == {"ingest", "read"}
    info = auth._verified.cache_info()
    assert (info.misses, info.hits, info.currsize) == (1, 2, 1)


def test_the_claims_handed_out_are_a_copy() -> None:
    token = mint_token(SECRET, scope="ingest")
    auth.verify(token, config())[0]["scope"] = "read"
    assert auth.verify(token, config())[0]["scope"] == "ingest"


def test_a_remembered_token_that_expires_is_refused_at_its_next_use() -> None:
    token = mint_token(SECRET, ttl=timedelta(minutes=5))
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    auth.verify(token, config())  # remembered
    auth.verify(token, config(), now=exp + auth.LEEWAY_S - 1)  # within the leeway
    with pytest.raises(ApiError) as refused:
        auth.verify(token, config(), now=exp + auth.LEEWAY_S)
    assert status(refused) == 401
    with pytest.raises(ApiError):  # and at every use after it
        auth.verify(token, config(), now=exp + auth.LEEWAY_S + 3600)


def test_an_expired_token_is_refused_through_the_api_although_it_was_remembered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    token = mint_token(SECRET, scope="read", ttl=timedelta(minutes=5))
    client = client_for(config())
    assert read(client, token) == 200
    later = time.time() + 5 * 60 + auth.LEEWAY_S + 1
    monkeypatch.setattr(auth.time, "time", lambda: later)
    assert read(client, token) == 401
    assert auth._verified.cache_info().hits == 1  # the memory answered; the times refused


def test_a_refused_token_is_never_remembered_and_stays_refused() -> None:
    wrong = mint_token(OTHER, scope="ingest")
    expired = mint_token(SECRET, ttl=timedelta(seconds=1), now=time.time() - 3600)
    for token in (wrong, expired, wrong, expired):
        with pytest.raises(ApiError) as refused:
            auth.verify(token, config())
        assert status(refused) == 401
    info = auth._verified.cache_info()
    assert (info.hits, info.currsize) == (0, 0)


def test_the_memory_is_bounded_least_recently_used_out() -> None:
    tokens = [mint_token(SECRET, subject=f"host-{i}") for i in range(auth.VERIFIED_TOKENS + 1)]
    for token in tokens[:auth.VERIFIED_TOKENS]:
        auth.verify(token, config())
    auth.verify(tokens[0], config())  # the first is now the most recently used
    auth.verify(tokens[-1], config())  # one past the bound: the second one goes
    info = auth._verified.cache_info()
    assert info.currsize == auth.VERIFIED_TOKENS
    hits = info.hits
    auth.verify(tokens[0], config())
    assert auth._verified.cache_info().hits == hits + 1
    auth.verify(tokens[1], config())  # forgotten: verified again
    assert auth._verified.cache_info().hits == hits + 1


def test_a_read_secret_set_later_takes_the_read_scope_from_a_remembered_token() -> None:
    token = mint_token(SECRET)  # no scope claim: both scopes, while AGENT_TOKEN grants both
    assert auth.verify(token, config())[1] == {"ingest", "read"}
    assert auth.verify(token, config(read_secret=READ_SECRET))[1] == {"ingest"}
    client = client_for(config(read_secret=READ_SECRET))
    assert read(client, token) == 403


def test_a_read_secret_removed_refuses_its_remembered_tokens() -> None:
    token = mint_token(READ_SECRET, scope="read")
    assert auth.verify(token, config(read_secret=READ_SECRET))[1] == {"read"}
    with pytest.raises(ApiError) as refused:
        auth.verify(token, config())
    assert status(refused) == 401


def test_a_new_agent_token_refuses_tokens_remembered_under_the_old_one() -> None:
    token = mint_token(SECRET, scope="ingest")
    auth.verify(token, config())
    with pytest.raises(ApiError) as refused:
        auth.verify(token, config(agent_token=OTHER))
    assert status(refused) == 401


def test_a_shorter_token_max_ttl_refuses_a_remembered_longer_lived_token() -> None:
    token = mint_token(SECRET, ttl=timedelta(days=2))
    auth.verify(token, config(token_max_ttl=timedelta(days=30)))
    auth.verify(token, config(token_max_ttl=timedelta(days=2)))  # exactly at the bound
    with pytest.raises(ApiError) as refused:
        auth.verify(token, config(token_max_ttl=timedelta(days=2) - timedelta(seconds=1)))
    assert status(refused) == 401


def client_for(cfg: ServerConfig) -> FlaskClient:
    app = create_app(cfg, FakeRepositories())
    app.testing = True
    return app.test_client()


def read(client: FlaskClient, token: str) -> int:
    return client.get(QUERY, headers={"Authorization": f"Bearer {token}"}).status_code
