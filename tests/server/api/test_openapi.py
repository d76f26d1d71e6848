"""GET /api/v1/openapi.json: a valid OpenAPI 3.0 document describing every route."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from miniobserv.config import ServerConfig
from miniobserv.model import METRIC_NAMES
from miniobserv.server.api import openapi
from miniobserv.server.api.context import current_config_of
from miniobserv.server.app import create_app
from miniobserv.server.storage.base import AGGREGATES, BUCKETS
from tests.fakes import FakeRepositories
from tests.server.api.conftest import Tokens


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.is_json
    body: dict[str, Any] = response.get_json()
    return body


def test_document_is_valid_openapi_3(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.0")
    validate(document)


def _routes(app: Flask) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        routes |= {(path, m.lower()) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    return routes


def test_every_route_is_described(app: Flask, document: dict[str, Any]) -> None:
    described = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert _routes(app) == described


def test_query_enums_come_from_the_allowlists(document: dict[str, Any]) -> None:
    params = {p["name"]: p for p in document["paths"]["/api/v1/metrics/query"]["get"]
              ["parameters"]}
    assert params["bucket"]["schema"]["enum"] == list(BUCKETS)
    assert params["agg"]["schema"]["enum"] == list(AGGREGATES)
    assert {name for name, p in params.items() if p["required"]} == {"name", "from", "to"}


def test_metric_names_come_from_the_model(document: dict[str, Any]) -> None:
    name = document["components"]["schemas"]["Metric"]["properties"]["name"]
    assert set(name["anyOf"][0]["enum"]) == METRIC_NAMES


def test_protected_endpoints_declare_bearer_and_public_ones_do_not(
        document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    paths = document["paths"]
    assert paths["/api/v1/metrics"]["post"]["x-token-scope"] == "ingest"
    assert paths["/api/v1/metrics/query"]["get"]["x-token-scope"] == "read"
    for public in ("/healthz", "/readyz", "/api/v1/openapi.json"):
        assert paths[public]["get"]["security"] == []


def test_errors_share_one_shape(document: dict[str, Any]) -> None:
    post = document["paths"]["/api/v1/metrics"]["post"]["responses"]
    for code in ("400", "401", "403", "413", "503"):
        schema = post[code]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}


def test_extension_helpers_add_to_the_document() -> None:
    before = openapi.build_document()
    openapi.add_schema("Probe", {"type": "object"})
    openapi.add_operation("/probe", "GET", {"responses": {"200": {"description": "ok"}}})
    try:
        after = openapi.build_document()
        assert "/probe" in after["paths"] and "Probe" in after["components"]["schemas"]
        validate(after)
    finally:
        del openapi.OPERATIONS["/probe"], openapi.SCHEMAS["Probe"]
    assert openapi.build_document() == before


# --- the answers the document promises are the answers the app gives -----------------------


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        *_, kind, name = node["$ref"].split("/")
        node = document["components"][kind][name]
    return node


def _assert_conforms(document: dict[str, Any], answer: dict[str, Any], response: Any) -> None:
    """``response`` (Flask's) has the content type, body and required headers of ``answer``."""
    answer = _resolve(document, answer)
    content = answer["content"]["application/json"]
    assert response.mimetype == "application/json"
    schema = {**_resolve(document, content["schema"]), "components": document["components"]}
    OAS30Validator(schema).validate(response.get_json())
    for name, header in answer.get("headers", {}).items():
        if header.get("required"):
            value = response.headers.get(name)
            assert value is not None, name
            if "enum" in header["schema"]:
                assert value in header["schema"]["enum"]


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, operation) for path, operations in document["paths"].items()
            for method, operation in operations.items()]


def test_every_operation_lists_the_answers_of_gunicorn_and_of_a_database_down(
        document: dict[str, Any]) -> None:
    for path, method, operation in _operations(document):
        codes = set(operation["responses"])
        assert {"414", "431"} <= codes, (path, method)
        if path != "/healthz":  # the one path that does not retry pending migrations
            answer = _resolve(document, operation["responses"]["503"])
            assert answer["headers"]["Retry-After"]["required"] is False, path
            assert answer["headers"]["Retry-After"]["schema"]["type"] == "integer"


def test_secured_operations_list_401_with_www_authenticate_and_403(
        document: dict[str, Any]) -> None:
    secured = [(p, m, op) for p, m, op in _operations(document) if op.get("security") != []]
    assert len(secured) >= 10
    for path, method, operation in secured:
        answers = operation["responses"]
        assert {"401", "403"} <= set(answers), (path, method)
        assert answers["401"]["headers"]["WWW-Authenticate"]["required"] is True


def test_operations_with_a_body_list_its_refusals(document: dict[str, Any]) -> None:
    posts = [(p, op) for p, m, op in _operations(document) if "requestBody" in op]
    assert {p for p, _ in posts} == {"/api/v1/metrics", "/api/v1/logs"}
    for path, operation in posts:
        assert {"202", "400", "409", "413", "415"} <= set(operation["responses"]), path
        encoding = next(p for p in operation["parameters"] if p["name"] == "Content-Encoding")
        assert set(encoding["schema"]["enum"]) == {"gzip", "x-gzip", "identity", ""}


def test_a_401_is_the_documented_answer(client: FlaskClient, document: dict[str, Any]) -> None:
    response = client.get("/api/v1/metrics/hosts")
    assert response.status_code == 401
    answer = document["paths"]["/api/v1/metrics/hosts"]["get"]["responses"]["401"]
    _assert_conforms(document, answer, response)


def test_a_403_is_the_documented_answer(client: FlaskClient, document: dict[str, Any],
                                        tokens: Tokens) -> None:
    response = client.get("/api/v1/metrics/hosts", headers=tokens.auth("ingest"))
    assert response.status_code == 403
    answer = document["paths"]["/api/v1/metrics/hosts"]["get"]["responses"]["403"]
    _assert_conforms(document, answer, response)


def test_415_and_413_are_the_documented_answers(client: FlaskClient, document: dict[str, Any],
                                                tokens: Tokens, app: Flask) -> None:
    answers = document["paths"]["/api/v1/logs"]["post"]["responses"]
    response = client.post("/api/v1/logs", data=b"{}", headers={
        **tokens.auth("ingest"), "Content-Encoding": "br"})
    assert response.status_code == 415
    _assert_conforms(document, answers["415"], response)
    limit = current_config_of(app).max_body_bytes
    response = client.post("/api/v1/logs", data=b" " * (limit + 1),
                           headers=tokens.auth("ingest"))
    assert response.status_code == 413
    _assert_conforms(document, answers["413"], response)


def test_routing_errors_are_the_documented_answers(client: FlaskClient,
                                                   document: dict[str, Any]) -> None:
    responses = document["components"]["responses"]
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    _assert_conforms(document, responses["NotFound"], missing)
    wrong_method = client.delete("/api/v1/metrics")
    assert wrong_method.status_code == 405
    _assert_conforms(document, responses["MethodNotAllowed"], wrong_method)
    assert "POST" in wrong_method.headers["Allow"]


def test_an_unavailable_store_is_the_documented_503(document: dict[str, Any],
                                                    config: ServerConfig,
                                                    tokens: Tokens) -> None:
    repos = FakeRepositories()
    repos.down = True
    client = create_app(config, repos).test_client()
    response = client.get("/api/v1/metrics/hosts", headers=tokens.auth("read"))
    assert response.status_code == 503
    answer = document["paths"]["/api/v1/metrics/hosts"]["get"]["responses"]["503"]
    _assert_conforms(document, answer, response)
