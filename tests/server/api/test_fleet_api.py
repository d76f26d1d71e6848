"""Handler tests: /api/v1/hosts, /api/v1/alerts, /metrics, the dashboard and its switches."""

from __future__ import annotations

import gzip
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from miniobserv.config import ServerConfig
from miniobserv.model import LogBatch, LogEntry, Metric, MetricBatch
from miniobserv.rules import parse_alert_rules
from miniobserv.server.app import create_app
from miniobserv.server.storage.base import AlertState
from tests.fakes import FakeRepositories
from tests.server.api.conftest import SECRET, Tokens

NOW = datetime.now(UTC)


@pytest.fixture(autouse=True)
def _now() -> None:
    """NOW is the time each test starts: the exposition's window is relative to the clock,
    and a whole suite run takes longer than that window."""
    global NOW
    NOW = datetime.now(UTC)
DASHBOARD_DATA = ["/api/v1/dashboard/query?host=web-01&name=mem.used_pct"
                  "&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z",
                  "/api/v1/dashboard/logs", "/api/v1/dashboard/latest?host=web-01"
                  f"&from={(NOW - timedelta(hours=1)).strftime('%Y-%m-%dT%H:%M:%SZ')}"]
DASHBOARD_ENDPOINTS = ["/api/v1/hosts", "/api/v1/alerts", "/metrics", *DASHBOARD_DATA]


def read() -> dict[str, str]:
    """A fresh read token's header: every data endpoint needs one by default."""
    return Tokens(SECRET).auth("read")


def client_for(repos: FakeRepositories, **settings: Any) -> FlaskClient:
    config = ServerConfig(agent_token=SECRET, auto_migrate=False,
                          **settings)
    app = create_app(config, repos)
    app.testing = True
    return app.test_client()


def store(repos: FakeRepositories, host: str, *metrics: tuple[str, float, dict[str, str]],
          time: datetime | None = None) -> None:
    at = NOW if time is None else time  # NOW of this test, not of the import
    repos.metrics.insert_batch(MetricBatch(host, [
        Metric(at, host, name, value, labels) for name, value, labels in metrics],
        uuid.uuid4()))


# --- /api/v1/hosts -----------------------------------------------------------------------------

def test_hosts_with_status_from_last_seen(client: FlaskClient, repos: FakeRepositories) -> None:
    now = datetime.now(UTC)
    repos.metrics.host_seen.update({"web-02": now - timedelta(seconds=30),
                                    "web-01": now - timedelta(seconds=1),
                                    "web-03": now - timedelta(minutes=5)})
    answer = client.get("/api/v1/hosts", headers=read()).get_json()
    assert [(h["host"], h["status"]) for h in answer["hosts"]] == \
        [("web-01", "ok"), ("web-02", "stale"), ("web-03", "down")]
    assert answer["hosts"][2]["last_seen"].endswith("Z")


def test_hosts_empty_is_a_list(client: FlaskClient) -> None:
    assert client.get("/api/v1/hosts", headers=read()).get_json() == {"hosts": []}


def test_hosts_503_when_the_store_is_down(client: FlaskClient, repos: FakeRepositories) -> None:
    repos.down = True
    response = client.get("/api/v1/hosts", headers=read())
    assert (response.status_code, response.get_json()) == (503, {"error": "storage unavailable"})


# --- /api/v1/alerts ----------------------------------------------------------------------------

RULES = parse_alert_rules([
    {"host": "*", "name": "cpu.usage_pct", "labels": {"core": "total"}, "op": ">",
     "threshold": 90, "for": "5m"},
    {"host": "db-01", "name": "disk.used_pct", "op": ">=", "threshold": 80.5, "for": "90s"}])


def test_alerts_in_the_spec_shape_in_rule_order(repos: FakeRepositories) -> None:
    since, updated = NOW - timedelta(minutes=7), NOW
    repos.fleet.save_cycle([
        AlertState(RULES[1].key, "db-01", {"mount": "/"}, "pending", 81.0, since, updated),
        AlertState(RULES[0].key, "web-02", {"core": "total"}, "ok", 12.0, since, updated),
        AlertState(RULES[0].key, "web-01", {"core": "total"}, "firing", 97.5, since, updated,
                   "firing"),
        AlertState("gone", "web-01", {}, "firing", 1.0, since, updated),
    ], [], [], [RULES[0].key, RULES[1].key, "gone"])
    answer = client_for(repos, alert_rules=RULES).get("/api/v1/alerts", headers=read()).get_json()
    assert [(a["host"], a["state"]) for a in answer["alerts"]] == \
        [("web-01", "firing"), ("web-02", "ok"), ("db-01", "pending")]
    first = answer["alerts"][0]
    assert list(first) == ["rule", "host", "labels", "state", "value", "since", "updated_at"]
    assert first["rule"] == {"host": "*", "name": "cpu.usage_pct", "labels": {"core": "total"},
                             "op": ">", "threshold": 90.0, "for": "5m"}
    assert answer["alerts"][2]["rule"]["for"] == "1m30s"
    assert first["value"] == 97.5 and first["since"].endswith("Z")


def test_alerts_without_rules(client: FlaskClient) -> None:
    assert client.get("/api/v1/alerts", headers=read()).get_json() == {"alerts": []}


# --- /metrics -----------------------------------------------------------------------------------

def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_exposition_shows_the_newest_point_of_every_series(repos: FakeRepositories) -> None:
    store(repos, "web-01", ("cpu.usage_pct", 99.0, {"core": "total"}),
          time=NOW - timedelta(seconds=20))
    store(repos, "web-01", ("cpu.usage_pct", 12.5, {"core": "total"}),
          ("cpu.usage_pct", 30.0, {"core": "0"}), ("disk.used_pct", 41.0, {"mount": "/"}),
          ("custom.queue.depth", 7.0, {"host": "spoof", "__x": "y"}))
    store(repos, "web-02", ("cpu.usage_pct", 50.0, {"core": "total"}))
    store(repos, "old-01", ("cpu.usage_pct", 1.0, {"core": "total"}),
          time=NOW - timedelta(hours=1))  # past the exposition window
    response = client_for(repos).get("/metrics", headers=read())
    assert response.status_code == 200
    assert response.content_type == "text/plain; version=0.0.4; charset=utf-8"
    parsed = families(response.get_data(as_text=True))
    cpu = parsed["miniobserv_cpu_usage_pct"]
    assert cpu.type == "gauge" and cpu.documentation.startswith("CPU busy percent")
    assert {(s.labels["host"], s.labels["core"]): s.value for s in cpu.samples} == \
        {("web-01", "total"): 12.5, ("web-01", "0"): 30.0, ("web-02", "total"): 50.0}
    assert parsed["miniobserv_disk_used_pct"].samples[0].labels == {"host": "web-01",
                                                                    "mount": "/"}
    custom = parsed["miniobserv_custom_queue_depth"].samples[0]
    assert custom.labels == {"host": "web-01", "exported_host": "spoof", "label__x": "y"}


def test_exposition_escapes_label_values(repos: FakeRepositories) -> None:
    store(repos, "web-01", ("disk.used_pct", 1.0, {"mount": 'C:\\ "quoted"\nline'}))
    parsed = families(client_for(repos).get("/metrics", headers=read()).get_data(as_text=True))
    assert parsed["miniobserv_disk_used_pct"].samples[0].labels["mount"] == \
        'C:\\ "quoted"\nline'


def test_own_counters_and_latency_histograms(client: FlaskClient, tokens: Tokens,
                                             repos: FakeRepositories) -> None:
    batch = {"host": "web-01", "metrics": [
        {"time": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"), "name": "mem.used_pct", "value": v}
        for v in (1, 2, 3)]}
    auth = tokens.auth("ingest")
    assert client.post("/api/v1/metrics", json=batch, headers=auth).status_code == 202
    assert client.post("/api/v1/metrics", data=gzip.compress(json.dumps(batch).encode()),
                       headers={**auth, "Content-Encoding": "gzip",
                                "Content-Type": "application/json"}).status_code == 202
    assert client.post("/api/v1/metrics", json={"host": "x"}, headers=auth).status_code == 400
    logs = {"host": "web-01", "entries": [{"time": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                           "level": "info", "message": "hi"}]}
    assert client.post("/api/v1/logs", json=logs, headers=auth).status_code == 202
    client.get("/healthz")
    parsed = families(client.get("/metrics", headers=read()).get_data(as_text=True))
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for f in parsed.values() for s in f.samples}
    assert value[("miniobserv_ingested_points_total", ())] == 6
    assert not [name for name, _ in value if name.endswith("_created")]
    assert value[("miniobserv_ingested_log_entries_total", ())] == 1
    assert value[("miniobserv_ingested_batches_total", (("kind", "metrics"),))] == 2
    assert value[("miniobserv_ingested_batches_total", (("kind", "logs"),))] == 1
    assert value[("miniobserv_rejected_batches_total", (("kind", "metrics"),
                                                        ("status", "400")))] == 1
    assert value[("miniobserv_http_requests_total", (("method", "GET"), ("route", "/healthz"),
                                                     ("status", "200")))] == 1
    assert value[("miniobserv_http_request_duration_seconds_count",
                  (("method", "POST"), ("route", "/api/v1/metrics")))] == 3
    assert parsed["miniobserv_http_request_duration_seconds"].type == "histogram"


# --- auth and the switches --------------------------------------------------------------------

@pytest.mark.parametrize("path", DASHBOARD_ENDPOINTS)
def test_data_endpoints_need_a_read_token_by_default(repos: FakeRepositories, tokens: Tokens,
                                                     path: str) -> None:
    client = client_for(repos)
    response = client.get(path)
    assert (response.status_code, response.get_json()) == (401, {"error": "unauthorized"})
    assert client.get(path, headers=tokens.auth("ingest")).status_code == 403
    assert client.get(path, headers=tokens.auth("read")).status_code == 200


@pytest.mark.parametrize("path", [p for p in DASHBOARD_ENDPOINTS
                                  if p != "/metrics" and "/logs" not in p])
def test_dashboard_auth_none_opens_the_dashboard_data(repos: FakeRepositories,
                                                      path: str) -> None:
    assert client_for(repos, dashboard_auth="none").get(path).status_code == 200


def test_metrics_auth_none_opens_only_metrics(repos: FakeRepositories) -> None:
    client = client_for(repos, metrics_auth="none")
    assert client.get("/metrics").status_code == 200
    assert client.get("/api/v1/hosts").status_code == 401
    assert client_for(repos, dashboard_auth="none").get("/metrics").status_code == 401


def test_the_page_loads_without_a_token_so_it_can_ask_for_one(repos: FakeRepositories) -> None:
    client = client_for(repos, dashboard_auth="token")
    page = client.get("/")
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    assert b"/dashboard/dashboard.js" in page.data and b"token" in page.data
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    for asset in ("dashboard.js", "dashboard.css"):
        assert client.get(f"/dashboard/{asset}").status_code == 200
    assert client.get("/dashboard/secrets.txt").status_code == 404
    assert client.get("/dashboard/..%2fapp.py").status_code == 404


def test_the_page_needs_nothing_from_outside() -> None:
    from miniobserv.server.api.dashboard import STATIC_DIR

    for name in ("dashboard.html", "dashboard.js", "dashboard.css"):
        text = (STATIC_DIR / name).read_text()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text and "//cdn" not in text


def test_dashboard_disabled_removes_the_page_and_its_data(repos: FakeRepositories) -> None:
    client = client_for(repos, dashboard_enabled=False)
    for path in ["/", "/dashboard/dashboard.js", *DASHBOARD_DATA]:
        response = client.get(path)
        assert (response.status_code, response.get_json()) == (404, {"error": "not found"})
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    assert "/" not in paths and "/api/v1/dashboard/latest" not in paths
    assert "/api/v1/hosts" in paths


def test_dashboard_disabled_keeps_hosts_and_alerts_behind_a_read_token(
        repos: FakeRepositories, tokens: Tokens) -> None:
    client = client_for(repos, dashboard_enabled=False, dashboard_auth="none")
    for path in ("/api/v1/hosts", "/api/v1/alerts"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=tokens.auth("read")).status_code == 200


# --- the dashboard's data endpoints ------------------------------------------------------------

def test_latest_of_a_host_is_the_newest_point(client: FlaskClient,
                                              repos: FakeRepositories) -> None:
    store(repos, "web-01", ("mem.used_pct", 10.0, {}), time=NOW - timedelta(minutes=2))
    store(repos, "web-01", ("mem.used_pct", 20.0, {}), time=NOW - timedelta(minutes=1))
    store(repos, "web-02", ("mem.used_pct", 30.0, {}))
    since = (NOW - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    answer = client.get(f"/api/v1/dashboard/latest?host=web-01&from={since}", headers=read()).get_json()
    assert [(s["name"], s["value"]) for s in answer["series"]] == [("mem.used_pct", 20.0)]


@pytest.mark.parametrize(("query", "field"), [
    ("from=2026-01-01T00:00:00Z", "host"), ("host=web-01", "from"),
    ("host=web-01&from=yesterday", "from"), ("host=web-01&from=1970-01-01T00:00:00Z", "from"),
    (f"host=%20&from={NOW.strftime('%Y-%m-%dT%H:%M:%SZ')}", "host")])
def test_latest_parameters(client: FlaskClient, query: str, field: str) -> None:
    response = client.get(f"/api/v1/dashboard/latest?{query}", headers=read())
    assert response.status_code == 400
    assert response.get_json()["error"].startswith(f"{field}: ")


def test_dashboard_query_and_logs_validate_like_the_api(client: FlaskClient,
                                                        repos: FakeRepositories) -> None:
    assert client.get("/api/v1/dashboard/query?host=web-01", headers=read()).get_json() == \
        {"error": "name: is required"}
    assert client.get("/api/v1/dashboard/logs?limit=-1", headers=read()).status_code == 400
    repos.logs.insert_batch(LogBatch("web-01", [LogEntry(NOW, "web-01", "warn", "disk slow")]))
    entries = client.get("/api/v1/dashboard/logs?host=web-01", headers=read()).get_json()["entries"]
    assert [(e["level"], e["message"]) for e in entries] == [("warn", "disk slow")]


def test_create_app_starts_no_threads_unless_asked(app: Flask) -> None:
    import threading

    assert not [t for t in threading.enumerate() if t.name.startswith("miniobserv-")]
    assert "miniobserv.alerting" not in app.extensions


def test_start_background_runs_the_service(repos: FakeRepositories) -> None:
    from miniobserv.server.app import stop_background

    config = replace(ServerConfig(agent_token="x" * 32, auto_migrate=False),
                     alert_interval=timedelta(hours=1))
    app = create_app(config, repos, start_background=True)
    try:
        service = app.extensions["miniobserv.alerting"]
        assert service.leading.wait(30)
    finally:
        stop_background(app)
    assert not service.leading.is_set()
