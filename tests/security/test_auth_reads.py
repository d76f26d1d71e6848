"""Attacks on reads: who can read the fleet without a token (issue 9, item 1; SPEC §4).

Defended here: a no-token read of every data endpoint is 401 by default; log search is never
public, even with ``DASHBOARD_AUTH=none``; ``DASHBOARD_ENABLED=false`` leaves nothing public;
``/metrics`` is public only with ``METRICS_AUTH=none``; the OpenAPI document's ``security``
says what each endpoint really needs; opening reads beyond loopback logs one warning.
Token attacks are in ``test_auth_tokens.py`` (which lists where the older ones live).
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from miniobserv.config import ServerConfig
from miniobserv.model import format_time
from miniobserv.server.exposure import gunicorn_binds, warn_if_exposed
from tests.agent.helpers import free_port
from tests.processes import CONFIG_ARGS, LoggedProcess
from tests.security.auth_helpers import TOKENS, client_for
from tests.server.api.conftest import SECRET, Tokens

# Within the range limits the query API enforces (dashboard latest: at most 30 days back).
_SINCE = format_time(datetime.now(UTC).replace(microsecond=0) - timedelta(days=1))
FROM_TO = f"from={_SINCE}&to={format_time(datetime.now(UTC).replace(microsecond=0))}"
DASHBOARD_DATA = [f"/api/v1/dashboard/query?host=web-01&name=mem.used_pct&{FROM_TO}",
                  f"/api/v1/dashboard/latest?host=web-01&from={_SINCE}",
                  "/api/v1/dashboard/fleet?name=mem.used_pct"]
LOG_SEARCH = ["/api/v1/dashboard/logs", "/api/v1/dashboard/logs?q=password",
              "/api/v1/logs/query?q=password"]
FLEET = ["/api/v1/hosts", "/api/v1/alerts"]
DATA_ENDPOINTS = [*DASHBOARD_DATA, *LOG_SEARCH, *FLEET, "/metrics",
                  f"/api/v1/metrics/query?host=web-01&name=mem.used_pct&{FROM_TO}",
                  "/api/v1/metrics/hosts", "/api/v1/metrics/latest?name=mem.used_pct",
                  f"/api/v1/metrics/top?name=mem.used_pct&{FROM_TO}"]
PUBLIC = ["/healthz", "/readyz", "/api/v1/openapi.json", "/", "/dashboard/dashboard.js",
          "/dashboard/dashboard.css"]



def assert_unauthorized(response: Any) -> None:
    assert (response.status_code, response.get_json()) == (401, {"error": "unauthorized"})


@pytest.mark.parametrize("path", DATA_ENDPOINTS)
def test_no_token_read_of_every_data_endpoint_is_401_by_default(path: str) -> None:
    client = client_for()
    assert_unauthorized(client.get(path))
    assert client.get(path, headers=TOKENS.auth("ingest")).status_code == 403
    assert client.get(path, headers=TOKENS.auth("read")).status_code == 200


@pytest.mark.parametrize("path", PUBLIC)
def test_the_page_shell_health_and_openapi_stay_public(path: str) -> None:
    assert client_for().get(path).status_code == 200


@pytest.mark.parametrize("path", LOG_SEARCH)
def test_log_search_needs_a_token_even_with_dashboard_auth_none(path: str) -> None:
    client = client_for(dashboard_auth="none", metrics_auth="none")
    assert_unauthorized(client.get(path))
    assert client.get(path, headers=TOKENS.auth("read")).status_code == 200


@pytest.mark.parametrize("path", [*DASHBOARD_DATA, *FLEET])
def test_dashboard_auth_none_is_the_explicit_opt_in(path: str) -> None:
    assert client_for(dashboard_auth="none").get(path).status_code == 200


@pytest.mark.parametrize("path", FLEET)
def test_dashboard_disabled_leaves_hosts_and_alerts_behind_a_token(path: str) -> None:
    client = client_for(dashboard_enabled=False, dashboard_auth="none")
    assert_unauthorized(client.get(path))
    assert client.get(path, headers=TOKENS.auth("read")).status_code == 200


def test_dashboard_disabled_removes_the_page_and_its_data() -> None:
    client = client_for(dashboard_enabled=False, dashboard_auth="none")
    for path in ["/", *DASHBOARD_DATA, *LOG_SEARCH[:2]]:
        assert client.get(path, headers=TOKENS.auth("read")).status_code == 404


def test_metrics_is_public_only_with_metrics_auth_none() -> None:
    assert_unauthorized(client_for(dashboard_auth="none").get("/metrics"))
    assert client_for(metrics_auth="none").get("/metrics").status_code == 200


SETTINGS = [{}, {"dashboard_auth": "none"}, {"metrics_auth": "none"},
            {"dashboard_enabled": False, "dashboard_auth": "none", "metrics_auth": "none"}]


@pytest.mark.parametrize("settings", SETTINGS, ids=str)
def test_openapi_security_says_what_each_endpoint_needs(settings: dict[str, Any]) -> None:
    """Every GET the document calls public answers without a token; every other one is 401."""
    client = client_for(**settings)
    document = client.get("/api/v1/openapi.json").get_json()
    examples = {path.split("?")[0]: path for path in DATA_ENDPOINTS}
    for path, operations in document["paths"].items():
        if "get" not in operations or "{" in path:
            continue
        status = client.get(examples.get(path, path)).status_code
        if operations["get"]["security"] == []:
            assert status == 200, path
        else:
            assert status == 401, path


# --- the warning when reads are opened beyond loopback --------------------------------------

def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name == "miniobserv.server.exposure"]


@pytest.mark.parametrize(("settings", "hosts", "warned"), [
    ({"dashboard_auth": "none"}, ["0.0.0.0"], True),
    ({"dashboard_auth": "none"}, ["10.0.0.5", "127.0.0.1"], True),
    ({"dashboard_auth": "none"}, ["web.example"], True),
    ({"dashboard_auth": "none"}, None, True),  # gunicorn's bind not found: assume exposed
    ({"metrics_auth": "none"}, ["::"], True),
    ({"dashboard_auth": "none"}, ["127.0.0.1"], False),
    ({"dashboard_auth": "none"}, ["127.0.0.2", "::1", "localhost", "local"], False),
    ({}, ["0.0.0.0"], False),
    ({"dashboard_auth": "none", "dashboard_enabled": False}, ["0.0.0.0"], False),
])
def test_one_warning_when_reads_are_public_beyond_loopback(
        caplog: pytest.LogCaptureFixture, settings: dict[str, Any], hosts: list[str] | None,
        warned: bool) -> None:
    config = ServerConfig(agent_token=SECRET, **settings)
    assert warn_if_exposed(config, hosts) is warned
    messages = warnings_of(caplog)
    assert len(messages) == (1 if warned else 0)
    if warned:
        assert "without a token" in messages[0] and SECRET not in messages[0]


class _GunicornApp:
    """Stands for gunicorn's application object, whose method imports the app."""

    def __init__(self, *binds: str) -> None:
        self.cfg = SimpleNamespace(bind=list(binds))

    def load(self) -> list[str] | None:
        return gunicorn_binds()


_GunicornApp.__module__ = "gunicorn.app.wsgiapp"


@pytest.mark.parametrize(("binds", "hosts"), [
    (["0.0.0.0:8000"], ["0.0.0.0"]),
    (["127.0.0.1:8000", "[::1]:8000"], ["127.0.0.1", "::1"]),
    (["unix:/run/miniobserv.sock"], ["local"]),
    (["localhost"], ["localhost"]),
    (["fd://3"], None),
])
def test_gunicorn_binds_are_read_from_the_importing_gunicorn_object(
        binds: list[str], hosts: list[str] | None) -> None:
    assert _GunicornApp(*binds).load() == hosts


def test_no_gunicorn_on_the_stack_means_unknown() -> None:
    assert gunicorn_binds() is None


@pytest.mark.integration
@pytest.mark.parametrize("config_file", [False, True], ids=["bare", "shipped-config"])
@pytest.mark.parametrize(("bind", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_gunicorn_with_dashboard_auth_none_warns_only_beyond_loopback(
        sqlite_url: str, bind: str, warned: bool, config_file: bool) -> None:
    """Once per worker without the config file (one worker here); with it, once in the
    master for all workers (two here)."""
    port = free_port()
    options = [*CONFIG_ARGS, "-w", "2"] if config_file else ["-w", "1"]
    server = LoggedProcess(
        [sys.executable, "-m", "gunicorn", *options, "-b", f"{bind}:{port}",
         "miniobserv.server.wsgi:app"],
        {"DATABASE_URL": sqlite_url, "AGENT_TOKEN": SECRET, "DASHBOARD_AUTH": "none"})
    try:
        assert server.wait_for("Booting worker"), server.output
        for _ in range(100):
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        assert requests.get(f"http://127.0.0.1:{port}/api/v1/hosts", timeout=5).ok
    finally:
        server.terminate()
    lines = [line for line in server.lines if "DASHBOARD_AUTH=none and listening" in line]
    assert len(lines) == (1 if warned else 0), server.output


@pytest.mark.integration
def test_serve_prints_a_working_dashboard_link_and_warns_once_beyond_loopback(
        sqlite_url: str) -> None:
    port = free_port()
    serve = LoggedProcess([sys.executable, "-m", "miniobserv.cli", "serve"],
                          {"DATABASE_URL": sqlite_url, "AGENT_TOKEN": SECRET,
                           "LISTEN_ADDR": f"0.0.0.0:{port}", "DASHBOARD_AUTH": "none"})
    try:
        assert serve.wait_for("Dashboard: "), serve.output
        link = next(line for line in serve.lines if line.startswith("Dashboard: ")).split()[1]
        base, _, token = link.partition("/#token=")
        assert base == f"http://127.0.0.1:{port}" and token
        logs = f"{base}/api/v1/dashboard/logs?q=password"
        assert requests.get(logs, timeout=5).status_code == 401  # never public
        assert requests.get(logs, timeout=5, headers=Tokens.header(token)).status_code == 200
    finally:
        serve.terminate()
    warnings = [line for line in serve.lines if "DASHBOARD_AUTH=none and listening" in line]
    assert len(warnings) == 1 and "0.0.0.0" in warnings[0], serve.output
    assert SECRET not in serve.output
