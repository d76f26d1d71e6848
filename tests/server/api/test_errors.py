"""Every error is the JSON envelope: routing errors, model errors, unexpected failures."""

from __future__ import annotations

import logging

import marshmallow as ma
import pytest
from flask import Flask
from flask.testing import FlaskClient

from miniobserv.config import ServerConfig
from miniobserv.server.api.errors import ApiError, first_marshmallow_message
from miniobserv.server.app import create_app
from tests.fakes import FakeRepositories
from tests.server.api.conftest import Tokens


class ExplodingMetrics:
    """A repository with a bug: every call raises something nobody expected."""

    def insert_batch(self, batch: object) -> int:
        raise RuntimeError("boom: password=hunter2")

    def query(self, query: object) -> list[object]:
        raise KeyError("boom")

    def hosts(self) -> list[str]:
        raise ZeroDivisionError("boom")


@pytest.fixture
def broken_client(config: ServerConfig) -> FlaskClient:
    repos = FakeRepositories()
    repos.metrics = ExplodingMetrics()  # type: ignore[assignment]
    return create_app(config, repos).test_client()


def test_unknown_path_is_json_404(client: FlaskClient) -> None:
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.is_json
    assert response.get_json() == {"error": "not found"}


def test_wrong_method_is_json_405_with_allow(client: FlaskClient, tokens: Tokens) -> None:
    response = client.get("/api/v1/metrics", headers=tokens.auth())
    assert response.status_code == 405
    assert response.get_json() == {"error": "method not allowed"}
    assert "POST" in response.headers["Allow"]


def test_delete_on_query_is_405(client: FlaskClient) -> None:
    response = client.delete("/api/v1/metrics/query")
    assert response.status_code == 405
    assert response.is_json


def test_unexpected_exception_is_generic_500_and_logged(
        broken_client: FlaskClient, tokens: Tokens, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    response = broken_client.get("/api/v1/metrics/hosts", headers=tokens.auth())
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal server error"}
    record = next(r for r in caplog.records if r.name == "miniobserv.server.api.errors")
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError


def test_500_does_not_leak_the_exception_text(broken_client: FlaskClient,
                                              tokens: Tokens) -> None:
    from tests.server.api.wire import batch

    response = broken_client.post("/api/v1/metrics", json=batch(), headers=tokens.auth())
    assert response.status_code == 500
    assert b"hunter2" not in response.data and b"boom" not in response.data


def test_storage_unavailable_is_503(client: FlaskClient, repos: FakeRepositories,
                                    tokens: Tokens) -> None:
    repos.down = True
    response = client.get("/api/v1/metrics/hosts", headers=tokens.auth())
    assert response.status_code == 503
    assert response.get_json() == {"error": "storage unavailable"}


def _app_with_route(config: ServerConfig, view: object) -> Flask:
    app = create_app(config, FakeRepositories())
    app.add_url_rule("/test-route", "test_route", view)  # type: ignore[arg-type]
    return app


def test_marshmallow_error_names_the_field(config: ServerConfig) -> None:
    def view() -> None:
        raise ma.ValidationError({"metrics": {3: {"value": ["Not a valid number."]}}})

    response = _app_with_route(config, view).test_client().get("/test-route")
    assert response.status_code == 400
    assert response.get_json() == {"error": "metrics[3].value: Not a valid number."}


def test_api_error_headers_are_sent(config: ServerConfig) -> None:
    def view() -> None:
        raise ApiError(429, "slow down", {"Retry-After": "5"})

    response = _app_with_route(config, view).test_client().get("/test-route")
    assert response.status_code == 429
    assert response.get_json() == {"error": "slow down"}
    assert response.headers["Retry-After"] == "5"


@pytest.mark.parametrize(("messages", "expected"), [
    ({"host": ["Missing data for required field."]},
     ("host", "Missing data for required field.")),
    ({"metrics": {0: {"labels": {"core": ["bad"]}}}}, ("metrics[0].labels.core", "bad")),
    ({"_schema": ["Invalid input type."]}, ("", "Invalid input type.")),
    (["plain"], ("", "plain")),
    ("text", ("", "text")),
    ({}, ("", "is invalid")),
])
def test_first_marshmallow_message(messages: object, expected: tuple[str, str]) -> None:
    assert first_marshmallow_message(messages) == expected
