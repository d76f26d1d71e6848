"""create_app over the real SQLite store, and its configuration from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from miniobserv.config import ServerConfig
from miniobserv.errors import ConfigError
from miniobserv.server.api.context import current_config, current_repos
from miniobserv.server.app import create_app
from miniobserv.tokens import mint_token
from tests.server.api.wire import batch

SECRET = "an-agent-token-of-32-characters!"


def test_app_migrates_and_serves_sqlite(tmp_path: Path) -> None:
    config = ServerConfig(agent_token=SECRET, database_url=f"sqlite:///{tmp_path}/m.db")
    app = create_app(config)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {mint_token(SECRET)}"}
    assert client.get("/readyz").get_json() == {"status": "ok"}
    assert client.post("/api/v1/metrics", json=batch(2), headers=headers).status_code == 202
    assert client.get("/api/v1/metrics/hosts", headers=headers).get_json() == {
        "hosts": ["web-01"]}
    with app.app_context():
        assert current_config() is config
        current_repos().close()


def test_app_reads_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_TOKEN", SECRET)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/env.db")
    monkeypatch.setenv("MAX_BODY_BYTES", "2048")
    app = create_app()
    with app.app_context():
        assert current_config().max_body_bytes == 2048
        current_repos().close()


def test_app_without_secret_refuses_to_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENT_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="AGENT_TOKEN"):
        create_app()
