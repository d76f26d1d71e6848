"""Every 503 of an unavailable database carries ``Retry-After`` (issue 11: database outage).

Handler tests over the fake store's ``down`` switch, and over an app whose migrations could
not run at start (a PostgreSQL URL nobody listens on): ingest, queries and ``/readyz`` all
answer 503 with the header, in the JSON shapes of SPEC §3.
"""

from __future__ import annotations

import gzip
import json
import threading
from typing import Any

import pytest
from flask.testing import FlaskClient

from miniobserv.config import ServerConfig
from miniobserv.server import app as app_module
from miniobserv.server.api.errors import STORAGE_RETRY_AFTER_S
from miniobserv.server.app import PendingMigrations, create_app
from miniobserv.server.storage.base import StorageUnavailable
from tests.agent.helpers import free_port
from tests.fakes import FakeRepositories
from tests.server.api.conftest import Tokens

RETRY_AFTER = str(STORAGE_RETRY_AFTER_S)


def metric_batch() -> dict[str, Any]:
    return {"host": "web-01", "metrics": [
        {"time": "2026-01-01T00:00:00Z", "host": "web-01", "name": "cpu.usage_pct",
         "value": 1.0, "labels": {"core": "total"}}]}


def log_batch() -> dict[str, Any]:
    return {"host": "web-01", "entries": [
        {"time": "2026-01-01T00:00:00Z", "host": "web-01", "level": "info", "message": "m"}]}


def assert_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.data
    assert response.headers.get("Retry-After") == RETRY_AFTER
    assert "error" in response.get_json()


@pytest.mark.parametrize("gzipped", [False, True])
def test_ingest_while_down_is_503_with_retry_after(client: FlaskClient, repos: FakeRepositories,
                                                   tokens: Tokens, gzipped: bool) -> None:
    repos.down = True
    for path, body in (("/api/v1/metrics", metric_batch()), ("/api/v1/logs", log_batch())):
        data = json.dumps(body).encode()
        headers = {**tokens.auth("ingest"), "Content-Type": "application/json"}
        if gzipped:
            data, headers["Content-Encoding"] = gzip.compress(data), "gzip"
        assert_unavailable(client.post(path, data=data, headers=headers))
    repos.down = False
    ok = client.post("/api/v1/metrics", json=metric_batch(), headers=tokens.auth("ingest"))
    assert ok.status_code == 202
    assert "Retry-After" not in ok.headers


def test_queries_while_down_are_503_with_retry_after(client: FlaskClient,
                                                     repos: FakeRepositories,
                                                     tokens: Tokens) -> None:
    repos.down = True
    read = tokens.auth("read")
    assert_unavailable(client.get("/api/v1/metrics/hosts", headers=read))
    assert_unavailable(client.get("/api/v1/metrics/query", headers=read, query_string={
        "host": "web-01", "name": "cpu.usage_pct", "from": "2026-01-01T00:00:00Z",
        "to": "2026-01-01T01:00:00Z"}))
    assert_unavailable(client.get("/api/v1/logs/query", headers=read))


def test_readyz_while_down_has_retry_after(client: FlaskClient, repos: FakeRepositories) -> None:
    repos.down = True
    response = client.get("/readyz")
    assert_unavailable(response)
    assert response.get_json() == {"status": "unavailable", "error": "database unavailable"}
    repos.down = False
    assert "Retry-After" not in client.get("/readyz").headers


def test_migrations_pending_answer_503_with_retry_after(config: ServerConfig,
                                                        tokens: Tokens,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/none?connect_timeout=1"
    pending = PendingMigrations(url)
    monkeypatch.setattr(app_module, "open_store",
                        lambda _config: (FakeRepositories(), pending))
    down = ServerConfig(agent_token=config.agent_token, database_url=url, auto_migrate=True)
    client = create_app(down).test_client()
    ready = client.get("/readyz")
    assert_unavailable(ready)
    assert ready.get_json() == {"status": "unavailable", "error": "database unavailable"}
    assert_unavailable(client.post("/api/v1/metrics", json=metric_batch(),
                                   headers=tokens.auth("ingest")))
    assert client.get("/healthz").status_code == 200
    assert not pending.done


def test_a_request_does_not_queue_behind_a_migration_attempt(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """While one thread retries the migrations, another is refused at once, not queued."""
    from miniobserv.server.storage import migrate

    entered, release = threading.Event(), threading.Event()

    def slow_upgrade(_url: str) -> None:
        entered.set()
        release.wait(30)
        raise StorageUnavailable("database unavailable: still down")

    monkeypatch.setattr(migrate, "upgrade_or_unavailable", slow_upgrade)
    pending = PendingMigrations("postgresql://nobody@127.0.0.1:1/none")
    errors: list[BaseException] = []

    def first() -> None:
        try:
            pending.ensure()
        except StorageUnavailable as err:
            errors.append(err)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert entered.wait(30)
        with pytest.raises(StorageUnavailable, match="being retried"):
            pending.ensure()
    finally:
        release.set()
        thread.join(30)
    assert len(errors) == 1 and not pending.done
