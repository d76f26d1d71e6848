"""GET /api/v1/openapi.json: a valid OpenAPI 3.0 document describing every route."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from miniobserv.model import METRIC_NAMES
from miniobserv.server.api import openapi
from miniobserv.server.storage.base import AGGREGATES, BUCKETS


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
