"""schemathesis against a live server: every operation of /api/v1/openapi.json, fuzzed.

A real gunicorn (the shipped configuration, two workers) serves the app on SQLite and on
PostgreSQL; schemathesis loads the document the server itself answers and sends, for each
operation, a bounded number of generated requests (valid ones and ones that break the
description), with a valid token of the operation's scope (``x-token-scope``). Every answer
must be no 5xx, and its status code, content type, headers and body must be what the
document describes. Generation is deterministic (derandomized), so CI sees the same requests
on every run; a failure prints the request as a curl command.

The numbers of requests sent go to RELIABILITY.md ("Fuzzing").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from schemathesis import Case
from schemathesis.config import SchemathesisConfig

from miniobserv.config import ServerConfig
from miniobserv.server.app import create_app
from miniobserv.server.storage import migrate
from miniobserv.tokens import mint_token
from tests.agent.helpers import SECRET
from tests.conftest import PostgresDatabases
from tests.fakes import FakeRepositories
from tests.processes import CONFIG_ARGS, Gunicorn

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 100  # per operation and phase; the whole module stays within a few minutes
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance",
          "negative_data_rejection", "ignored_auth", "unsupported_method",
          "allow_header_conformance"]
SENT: dict[str, Counter[int]] = {}  # answers' status codes by store (printed at the end)


def fuzz_config() -> SchemathesisConfig:
    """Deterministic generation, every phase but the stateful one, the checks above.

    ``allow-extra-parameters: false``: the API ignores query parameters it does not know (as
    most HTTP APIs do), which the document does not forbid; ``with-security-parameters:
    false``: the Authorization header is the test's valid token, and ``ignored_auth`` sends
    requests without it (expecting the 401).
    """
    return SchemathesisConfig.from_dict({
        "seed": 20261204,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True,
                       "database": "none", "allow-extra-parameters": False,
                       "with-security-parameters": False},
        "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True},
                   "fuzzing": {"enabled": True}, "stateful": {"enabled": False}},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        "request-timeout": 30,
    })


def described_schema() -> schemathesis.BaseSchema:
    """The document as the app serves it (over fakes: it holds no data); loaded when the module
    is collected, so that each operation is a test of its own. The live servers serve this same
    document (test_the_live_server_serves_the_fuzzed_document)."""
    app = create_app(ServerConfig(agent_token=SECRET, auto_migrate=False), FakeRepositories())
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, config=fuzz_config())


schema = described_schema()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live_server(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    """gunicorn with the shipped configuration (its request line and header limits) on a
    migrated store of this module alone, shared by the operations' tests."""
    databases: PostgresDatabases | None = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'miniobserv.db'}"
        migrate.upgrade(url)
    else:
        databases = request.getfixturevalue("postgres_databases")
        url = databases.create()
    server = Gunicorn(url, args=CONFIG_ARGS, env={"LOG_LEVEL": "warning"})
    try:
        server.wait_ready()
        yield server
    finally:
        server.terminate()
        answers = SENT.get(request.param, Counter())
        print(f"\nfuzz: {answers.total()} requests on {request.param}, by status: "
              f"{dict(sorted(answers.items()))}")
        if databases is not None:
            databases.drop(url)


def token_for(case: Case) -> dict[str, str]:
    """A valid token of the scope the operation asks for (none for public operations)."""
    scope = case.operation.definition.raw.get("x-token-scope")
    if scope is None:
        return {}
    return {"Authorization": f"Bearer {mint_token(SECRET, scope=scope)}"}


def test_the_live_server_serves_the_fuzzed_document(live_server: Gunicorn) -> None:
    served = requests.get(f"{live_server.url}/api/v1/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == schema.raw_schema


@schema.parametrize()
def test_every_operation_answers_as_described(case: Case, live_server: Gunicorn,
                                              request: pytest.FixtureRequest) -> None:
    store = request.node.callspec.params["live_server"]
    response = case.call_and_validate(base_url=live_server.url, headers=token_for(case))
    SENT.setdefault(store, Counter())[response.status_code] += 1


@pytest.mark.parametrize(("status", "request_args"), [
    (414, {"params": {"x": "a" * 5000}}),  # past limit_request_line (4094 bytes)
    (431, {"headers": {"X-Big": "a" * 9000}}),  # past limit_request_field_size (8190)
])
def test_gunicorn_limits_answer_as_described(live_server: Gunicorn, status: int,
                                             request_args: dict[str, Any]) -> None:
    """414 and 431 come from gunicorn, before the app: the HTML the document gives them."""
    answer = requests.get(f"{live_server.url}/api/v1/metrics/hosts", timeout=10,
                          **request_args)
    assert answer.status_code == status
    described = schema.raw_schema["paths"]["/api/v1/metrics/hosts"]["get"]["responses"]
    assert answer.headers["Content-Type"].split(";")[0] in described[str(status)]["content"]
