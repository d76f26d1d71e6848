"""Authentication and scopes (SPEC §4), attacked through the real endpoints."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask.testing import FlaskClient

from tests.fakes import FakeRepositories
from tests.server.api.conftest import Tokens
from tests.server.api.wire import batch

QUERY = "/api/v1/metrics/query?host=web-01&name=cpu.usage_pct" \
        "&from=2026-06-05T10:00:00Z&to=2026-06-05T11:00:00Z"


def post_batch(client: FlaskClient, headers: dict[str, str]):  # noqa: ANN201 - test helper
    return client.post("/api/v1/metrics", json=batch(), headers=headers)


def assert_unauthorized(response) -> None:  # noqa: ANN001
    assert response.status_code == 401
    assert response.get_json() == {"error": "unauthorized"}
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_valid_token_is_accepted(client: FlaskClient, tokens: Tokens) -> None:
    response = post_batch(client, tokens.auth())
    assert response.status_code == 202
    assert response.get_json() == {"ingested": 1}


@pytest.mark.parametrize("issuer", ["miniobserv-agent", "miniobserv"])
def test_both_issuers_are_accepted(client: FlaskClient, tokens: Tokens, issuer: str) -> None:
    assert post_batch(client, tokens.header(tokens.mint(issuer=issuer))).status_code == 202


def test_scheme_is_case_insensitive(client: FlaskClient, tokens: Tokens) -> None:
    assert post_batch(client, tokens.header(tokens.mint(), scheme="bearer")).status_code == 202


def _rsa_token(tokens: Tokens) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return tokens.craft(key=key, algorithm="RS256")


def _tampered(tokens: Tokens) -> str:
    header, payload, signature = tokens.mint(scope="read").split(".")
    forged = tokens.craft(scope=None).split(".")[1]  # a payload without the scope limit
    assert forged != payload
    return f"{header}.{forged}.{signature}"


BAD_HEADERS: dict[str, Callable[[Tokens], dict[str, str]]] = {
    "no header": lambda t: {},
    "empty header": lambda t: {"Authorization": ""},
    "basic scheme": lambda t: {"Authorization": "Basic dXNlcjpwYXNz"},
    "token without scheme": lambda t: {"Authorization": t.mint()},
    "bearer without token": lambda t: {"Authorization": "Bearer "},
    "basic scheme carrying a valid jwt": lambda t: t.header(t.mint(), scheme="Basic"),
    "garbage token": lambda t: t.header("not.a.jwt"),
    "alg none": lambda t: t.header(t.unsigned("none")),
    "alg None capitalised": lambda t: t.header(t.unsigned("None")),
    "alg HS256 without signature": lambda t: t.header(t.unsigned("HS256")),
    "RS256": lambda t: t.header(_rsa_token(t)),
    "HS512 with the right secret": lambda t: t.header(t.craft(algorithm="HS512")),
    "HS384 with the right secret": lambda t: t.header(t.craft(algorithm="HS384")),
    "expired beyond leeway": lambda t: t.header(t.craft(exp=int(time.time()) - 40)),
    "missing exp": lambda t: t.header(t.craft(exp=None)),
    "exp not a number": lambda t: t.header(t.craft(exp="tomorrow")),
    "exp a numeric string": lambda t: t.header(t.craft(exp=str(int(time.time()) + 3600))),
    "exp true": lambda t: t.header(t.craft(exp=True)),
    "exp infinite": lambda t: t.header(t.craft(exp=float("inf"))),
    "missing iss": lambda t: t.header(t.craft(iss=None)),
    "wrong iss": lambda t: t.header(t.craft(iss="someone-else")),
    "iss as a list": lambda t: t.header(t.signed_raw(iss=["miniobserv"])),
    "iss substring of an allowed one": lambda t: t.header(t.craft(iss="mini")),
    "tampered payload": lambda t: t.header(_tampered(t)),
    "wrong secret": lambda t: t.header(t.craft(key="another-secret-of-32-characters!")),
    "two tokens": lambda t: {"Authorization": f"Bearer {t.mint()} {t.mint()}"},
}


@pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")  # HS384/HS512 keys
@pytest.mark.parametrize("attack", BAD_HEADERS, ids=list(BAD_HEADERS))
def test_bad_credentials_answer_401_without_detail(client: FlaskClient, tokens: Tokens,
                                                   repos: FakeRepositories,
                                                   attack: str) -> None:
    assert_unauthorized(post_batch(client, BAD_HEADERS[attack](tokens)))
    assert_unauthorized(client.get(QUERY, headers=BAD_HEADERS[attack](tokens)))
    assert repos.metrics.stored() == []


def test_expired_within_leeway_is_accepted(client: FlaskClient, tokens: Tokens) -> None:
    token = tokens.craft(exp=int(time.time()) - 20)
    assert post_batch(client, tokens.header(token)).status_code == 202


def test_minted_token_expires(client: FlaskClient, tokens: Tokens) -> None:
    token = tokens.mint(ttl=timedelta(minutes=1), now=time.time() - 3600)
    assert_unauthorized(post_batch(client, tokens.header(token)))


def test_wrong_secret_of_minimum_length(client: FlaskClient, tokens: Tokens) -> None:
    token = jwt.encode(tokens.claims(), "x" * 32, algorithm="HS256")
    assert_unauthorized(post_batch(client, tokens.header(token)))


@pytest.mark.parametrize(("scope", "post_status", "query_status"), [
    (None, 202, 200),
    ("ingest", 202, 403),
    ("read", 403, 200),
])
def test_scopes(client: FlaskClient, tokens: Tokens, scope: str | None, post_status: int,
                query_status: int) -> None:
    headers = tokens.auth(scope)
    assert post_batch(client, headers).status_code == post_status
    assert client.get(QUERY, headers=headers).status_code == query_status
    assert client.get("/api/v1/metrics/hosts", headers=headers).status_code == query_status


@pytest.mark.parametrize("scope", ["admin", "", ["ingest"], 7])
def test_unknown_scope_grants_nothing(client: FlaskClient, tokens: Tokens,
                                      scope: object) -> None:
    headers = tokens.header(tokens.craft(scope=scope))
    response = post_batch(client, headers)
    assert response.status_code == 403
    assert response.get_json() == {"error": "forbidden"}
    assert client.get(QUERY, headers=headers).status_code == 403


def test_space_separated_scopes_grant_each(client: FlaskClient, tokens: Tokens) -> None:
    headers = tokens.header(tokens.craft(scope="read ingest"))
    assert post_batch(client, headers).status_code == 202
    assert client.get(QUERY, headers=headers).status_code == 200


def test_forbidden_body_and_nothing_stored(client: FlaskClient, tokens: Tokens,
                                           repos: FakeRepositories) -> None:
    response = post_batch(client, tokens.auth("read"))
    assert response.get_json() == {"error": "forbidden"}
    assert repos.metrics.stored() == []


def test_auth_is_checked_before_the_body(client: FlaskClient) -> None:
    response = client.post("/api/v1/metrics", data=b"{not json", headers={})
    assert_unauthorized(response)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/api/v1/openapi.json"])
def test_public_endpoints_need_no_token(client: FlaskClient, path: str) -> None:
    assert client.get(path).status_code == 200


def test_short_secret_of_spec_minimum_works(repos: FakeRepositories) -> None:
    from miniobserv.config import ServerConfig
    from miniobserv.server.app import create_app

    app = create_app(ServerConfig(agent_token="0123456789abcdef", auto_migrate=False), repos)
    tokens = Tokens("0123456789abcdef")
    with pytest.warns(jwt.InsecureKeyLengthWarning):
        response = post_batch(app.test_client(), tokens.auth())
    assert response.status_code == 202


def test_token_is_never_logged(client: FlaskClient, tokens: Tokens,
                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    bad = tokens.craft(iss="intruder")
    good = tokens.mint()
    post_batch(client, tokens.header(bad))
    post_batch(client, tokens.header(good))
    assert bad not in caplog.text and good not in caplog.text
    assert tokens.secret not in caplog.text


def _dashboard_client(dashboard_auth: str) -> FlaskClient:
    from miniobserv.config import ServerConfig
    from miniobserv.server.api.auth import require_dashboard
    from miniobserv.server.app import create_app
    from tests.server.api.conftest import SECRET

    config = ServerConfig(agent_token=SECRET, auto_migrate=False, dashboard_auth=dashboard_auth)
    app = create_app(config, FakeRepositories())
    app.add_url_rule("/dashboard-probe", "dashboard_probe",
                     require_dashboard(lambda: {"seen": True}))
    return app.test_client()


def test_dashboard_endpoints_are_public_only_with_dashboard_auth_none(tokens: Tokens) -> None:
    assert _dashboard_client("none").get("/dashboard-probe").get_json() == {"seen": True}


def test_dashboard_auth_token_requires_a_read_token(tokens: Tokens) -> None:
    client = _dashboard_client("token")
    assert_unauthorized(client.get("/dashboard-probe"))
    assert client.get("/dashboard-probe", headers=tokens.auth("ingest")).status_code == 403
    assert client.get("/dashboard-probe", headers=tokens.auth("read")).status_code == 200
    assert client.get("/dashboard-probe", headers=tokens.auth()).status_code == 200
