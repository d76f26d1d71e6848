"""Attacks with tokens (issue 9, item 1; SPEC §4): lifetimes and the read/ingest secrets.

Defended here: a token living longer than ``TOKEN_MAX_TTL`` (``exp - iat``, or ``exp - now``
without ``iat``) is refused, exactly at the limit it is accepted; ``miniobserv token --ttl``
cannot mint past it and the agent mints within it; with ``READ_SECRET``, a token signed with
``AGENT_TOKEN`` cannot read (403) and one signed with ``READ_SECRET`` cannot ingest (403).

Where the other token attacks are tested (they stay beside the endpoints they attack):
- ``tests/server/api/test_auth.py``: alg none/None, unsigned HS256, RS256, HS384/HS512,
  expired beyond the 30 s leeway, missing/non-numeric/infinite ``exp``, missing, wrong,
  list-valued or substring ``iss``, tampered payload, wrong secret, Basic scheme, two
  tokens, unknown scopes, scope limits (403), 401 body without detail, tokens never logged.
- ``tests/test_cli.py``: ``miniobserv token`` output (HS256, exp, iss) and bad ``--ttl``.
- ``tests/agent/test_sender.py``: the agent's renewal before expiry and after a 401.
- ``tests/security/test_auth_reads.py``: which endpoints a missing token can read.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import jwt
import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from miniobserv.agent.sender import TokenSource
from miniobserv.cli import cli
from miniobserv.tokens import mint_token
from tests.security.auth_helpers import TOKENS, client_for
from tests.server.api.conftest import SECRET, Tokens
from tests.server.api.wire import batch

READ_SECRET = "r3ad-only-Secret-0f-32-characters"
DAY = 86400
MAX_S = 30 * DAY
QUERY = "/api/v1/metrics/query?host=web-01&name=cpu.usage_pct" \
        "&from=2026-06-05T10:00:00Z&to=2026-06-05T11:00:00Z"



def read(client: FlaskClient, token: str) -> int:
    return client.get(QUERY, headers=Tokens.header(token)).status_code


def ingest(client: FlaskClient, token: str) -> int:
    return client.post("/api/v1/metrics", json=batch(), headers=Tokens.header(token)).status_code


# --- TOKEN_MAX_TTL ---------------------------------------------------------------------------

@pytest.mark.parametrize(("lifetime_s", "status"), [
    (MAX_S, 200), (MAX_S + 1, 401), (MAX_S + 60, 401), (365 * DAY, 401)])
def test_lifetime_exp_minus_iat_is_bounded_by_30_days(lifetime_s: int, status: int) -> None:
    now = int(time.time())
    token = TOKENS.craft(iat=now, exp=now + lifetime_s)
    assert read(client_for(), token) == status


def test_an_old_iat_counts_even_when_exp_is_near() -> None:
    now = int(time.time())
    token = TOKENS.craft(iat=now - MAX_S, exp=now + 60)  # lifetime 30 d + 1 min
    assert read(client_for(), token) == 401


@pytest.mark.parametrize(("exp_in_s", "status"), [
    (MAX_S + 60, 401), (MAX_S - 60, 200)])
def test_without_iat_the_lifetime_is_exp_minus_now(exp_in_s: int, status: int) -> None:
    token = TOKENS.craft(iat=None, exp=int(time.time()) + exp_in_s)
    assert "iat" not in jwt.decode(token, options={"verify_signature": False})
    assert read(client_for(), token) == status


@pytest.mark.parametrize("iat", ["yesterday", "1700000000", True])
def test_iat_that_is_not_a_number_is_refused(iat: object) -> None:
    token = TOKENS.signed_raw(iat=iat)
    assert read(client_for(), token) == 401


def test_token_max_ttl_is_configurable() -> None:
    client = client_for(token_max_ttl=timedelta(hours=1))
    assert read(client, TOKENS.mint("read", ttl=timedelta(hours=1))) == 200
    assert read(client, TOKENS.mint("read", ttl=timedelta(hours=1, seconds=1))) == 401
    assert ingest(client, TOKENS.mint(ttl=timedelta(hours=24))) == 401  # a default agent's


def test_the_agent_mints_within_a_short_token_max_ttl() -> None:
    client = client_for(token_max_ttl=timedelta(hours=1))
    tokens = TokenSource(SECRET, max_ttl=timedelta(hours=1))
    assert ingest(client, tokens.get()) == 202
    claims = jwt.decode(tokens.get(), SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 3600
    assert TokenSource(SECRET, max_ttl=timedelta(days=30)).ttl == timedelta(hours=24)


# --- miniobserv token --ttl ------------------------------------------------------------------

def token_command(*args: str, **env: str) -> Any:
    return CliRunner().invoke(cli, ["token", *args],
                              env={"AGENT_TOKEN": SECRET, "READ_SECRET": "",
                                   "TOKEN_MAX_TTL": "", **env})


def test_cli_mints_exactly_token_max_ttl_and_the_server_takes_it() -> None:
    result = token_command("--ttl", "30d", "--scope", "read")
    assert result.exit_code == 0, result.output
    assert read(client_for(), result.output.strip()) == 200


@pytest.mark.parametrize(("args", "env", "message"), [
    (("--ttl", "30d1s"), {}, "--ttl 30d1s is above TOKEN_MAX_TTL=30d"),
    (("--ttl", "3650d"), {}, "--ttl 3650d is above TOKEN_MAX_TTL=30d"),
    (("--ttl", "2h"), {"TOKEN_MAX_TTL": "1h"}, "--ttl 2h is above TOKEN_MAX_TTL=1h"),
])
def test_cli_refuses_a_ttl_above_token_max_ttl_in_one_line(args: tuple[str, ...],
                                                          env: dict[str, str],
                                                          message: str) -> None:
    result = token_command(*args, **env)
    assert result.exit_code == 2
    assert result.output == f"miniobserv: {message}\n"


# --- READ_SECRET -----------------------------------------------------------------------------

def test_without_read_secret_one_token_reads_and_ingests_as_before() -> None:
    client = client_for()
    token = mint_token(SECRET, scope=None)
    assert (read(client, token), ingest(client, token)) == (200, 202)


def test_agent_token_signed_tokens_cannot_read_with_read_secret() -> None:
    client = client_for(read_secret=READ_SECRET)
    for scope in (None, "read"):
        token = mint_token(SECRET, scope=scope)
        response = client.get(QUERY, headers=Tokens.header(token))
        assert (response.status_code, response.get_json()) == (403, {"error": "forbidden"})
        assert client.get("/api/v1/dashboard/logs?q=password",
                          headers=Tokens.header(token)).status_code == 403
    assert ingest(client, mint_token(SECRET)) == 202  # the agents keep working


def test_read_secret_signed_tokens_cannot_ingest() -> None:
    client = client_for(read_secret=READ_SECRET)
    for scope in (None, "read", "ingest"):
        assert ingest(client, mint_token(READ_SECRET, scope=scope)) == 403
    assert read(client, mint_token(READ_SECRET, scope="read")) == 200


@pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")  # the HS512 forgery
def test_read_secret_tokens_still_obey_every_other_check() -> None:
    client = client_for(read_secret=READ_SECRET)
    expired = mint_token(READ_SECRET, ttl=timedelta(minutes=1), scope="read",
                         now=time.time() - 3600)
    too_long = mint_token(READ_SECRET, ttl=timedelta(days=30, seconds=1), scope="read")
    other = mint_token("another-secret-of-32-characters!", scope="read")
    assert [read(client, t) for t in (expired, too_long, other)] == [401, 401, 401]
    forged = jwt.encode({"iss": "miniobserv", "exp": int(time.time()) + 60, "scope": "read"},
                        READ_SECRET, algorithm="HS512")
    assert read(client, forged) == 401


def test_cli_signs_read_tokens_with_read_secret() -> None:
    result = token_command("--scope", "read", READ_SECRET=READ_SECRET)
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    jwt.decode(token, READ_SECRET, algorithms=["HS256"])
    assert read(client_for(read_secret=READ_SECRET), token) == 200
    ingest_token = token_command("--scope", "ingest", READ_SECRET=READ_SECRET).output.strip()
    jwt.decode(ingest_token, SECRET, algorithms=["HS256"])


@pytest.mark.parametrize(("env", "args", "message"), [
    ({"READ_SECRET": READ_SECRET}, (), "READ_SECRET is set: choose --scope ingest or "
                                       "--scope read"),
    ({"READ_SECRET": "short"}, ("--scope", "read"),
     "READ_SECRET must be at least 16 characters"),
    ({"READ_SECRET": SECRET}, ("--scope", "read"), "READ_SECRET must differ from AGENT_TOKEN"),
])
def test_cli_read_secret_errors_are_one_line(env: dict[str, str], args: tuple[str, ...],
                                             message: str) -> None:
    result = token_command(*args, **env)
    assert (result.exit_code, result.output) == (2, f"miniobserv: {message}\n")
