"""Liveness and readiness probes."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.fakes import FakeRepositories


def test_healthz_is_ok_even_when_the_database_is_down(client: FlaskClient,
                                                       repos: FakeRepositories) -> None:
    repos.down = True
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert repos.pings == 0


def test_readyz_ok_pings_the_database(client: FlaskClient, repos: FakeRepositories) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert repos.pings == 1


def test_readyz_503_while_down_and_200_again_after(client: FlaskClient,
                                                   repos: FakeRepositories) -> None:
    repos.down = True
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "error": "database unavailable"}
    repos.down = False
    assert client.get("/readyz").status_code == 200


def test_readyz_503_on_any_ping_failure(client: FlaskClient, repos: FakeRepositories,
                                        monkeypatch) -> None:  # noqa: ANN001
    def ping() -> None:
        raise OSError("connection refused to postgresql://u:secret@db/x")

    monkeypatch.setattr(repos, "ping", ping)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert b"secret" not in response.data


def test_probes_reject_post(client: FlaskClient) -> None:
    response = client.post("/healthz")
    assert response.status_code == 405
    assert response.is_json
