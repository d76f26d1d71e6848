"""The OpenAPI 3.0 description of the HTTP API, served at ``/api/v1/openapi.json`` (public).

Hand-written from small dicts so that each resource adds its own paths and schemas: a new
endpoint is one ``OPERATIONS`` entry (or an :func:`add_operation` call) plus its schemas.
Enumerations come from the model and storage allowlists, so the document cannot drift
from what the server accepts.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Collection
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from miniobserv import __version__
from miniobserv.model import (
    CONTROL_CLASS,
    MAX_ABS_VALUE,
    MAX_BATCH,
    MAX_HOST_LEN,
    MAX_LABEL_KEY_LEN,
    MAX_LABEL_VALUE_LEN,
    MAX_LABELS,
    MAX_NAME_LEN,
    METRIC_SPECS,
)
from miniobserv.server.api.auth import is_dashboard_public, is_metrics_public
from miniobserv.server.api.context import current_config
from miniobserv.server.storage.base import AGGREGATES, BUCKETS

bp = Blueprint("openapi", __name__)

Json = dict[str, Any]


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def response(description: str, schema_name: str = "Error") -> Json:
    return {"description": description, "content": json_content(ref(schema_name))}


def query_param(name: str, description: str, schema: Json, required: bool = False,
                **extra: Any) -> Json:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema, **extra}


RETRY_AFTER: Json = {
    "description": "Seconds to wait before trying again (sent while the database is "
                   "unavailable)",
    "required": False, "schema": {"type": "integer", "minimum": 0}}
ALLOW: Json = {"description": "The methods the path answers", "required": True,
               "schema": {"type": "string", "example": "GET, HEAD, OPTIONS"}}
WWW_AUTHENTICATE: Json = {"description": "Always `Bearer`", "required": True,
                          "schema": {"type": "string", "enum": ["Bearer"]}}


def with_headers(answer: Json, **headers: Json) -> Json:
    """``answer`` with response ``headers`` (``Retry_After`` stands for ``Retry-After``)."""
    return {**answer, "headers": {name.replace("_", "-"): header
                                  for name, header in headers.items()}}


def gunicorn_response(description: str) -> Json:
    """An answer of gunicorn itself, before the app sees the request: a small HTML page."""
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def empty_allowed(parameter: Json) -> Json:
    """``parameter`` that also takes an empty value, which means the same as leaving it out."""
    return {**parameter, "allowEmptyValue": True,
            "schema": {"anyOf": [parameter["schema"], {"type": "string", "enum": [""]}]}}


ERRORS: dict[str, Json] = {
    "400": response("Invalid input; the message names the field, e.g. "
                    "`metrics[3].value: must be finite`"),
    "401": with_headers(response("Missing, malformed, expired or wrongly signed token (the "
                                 "same answer for every reason)"),
                        WWW_Authenticate=WWW_AUTHENTICATE),
    "403": response("Valid token outside its scope"),
    "404": response("No such resource"),
    "409": response("The batch_id was already used for a batch with other content (another "
                    "host, other records): nothing stored. A retry of the same batch is a 202"),
    "413": response("Body larger than MAX_BODY_BYTES, before or after gunzip"),
    "415": response("Content-Encoding other than gzip"),
    "503": with_headers(response("The database is unavailable"), Retry_After=RETRY_AFTER),
}
# Answers every operation may give whatever it does, added to each by build_document: the
# request line or headers past gunicorn's limits (gunicorn_conf.py), and the 503 of a database
# that was down at start (every path but /healthz retries the migrations first).
EVERY_OPERATION: dict[str, Json] = {
    "414": gunicorn_response("Request line longer than gunicorn's limit_request_line "
                             "(4094 bytes): answered by gunicorn"),
    "431": gunicorn_response("Too many or too large header fields (limit_request_fields, "
                             "limit_request_field_size): answered by gunicorn"),
    "503": ERRORS["503"],
}
# Answers of the app to a request no operation takes (components.responses).
ROUTING_ERRORS: dict[str, Json] = {
    "NotFound": response("No route for the path: `{\"error\": \"not found\"}`"),
    "MethodNotAllowed": with_headers(
        response("The path does not take the method: `{\"error\": \"method not allowed\"}`"),
        Allow=ALLOW),
}


def errors(*codes: str) -> Json:
    return {code: ERRORS[code] for code in codes}


# --- schemas -------------------------------------------------------------------------------

TIME: Json = {"type": "string", "format": "date-time",
              "description": "RFC 3339 with an offset (Z or ±hh:mm)",
              "example": "2026-06-05T10:00:00Z"}
HOST: Json = {"type": "string", "minLength": 1, "maxLength": MAX_HOST_LEN, "example": "web-01",
              "description": "Not only white space (trimmed); no control or bidi character",
              "pattern": f"^[^{CONTROL_CLASS}]*[^\\s{CONTROL_CLASS}][^{CONTROL_CLASS}]*$"}
LABELS: Json = {
    "type": "object", "maxProperties": MAX_LABELS,
    "description": f"Label keys match [A-Za-z_][A-Za-z0-9_]* (at most {MAX_LABEL_KEY_LEN} "
                   f"characters); values are 1 to {MAX_LABEL_VALUE_LEN} characters without "
                   "control or bidi characters",
    "additionalProperties": {"type": "string", "minLength": 1, "maxLength": MAX_LABEL_VALUE_LEN,
                             "pattern": f"^[^{CONTROL_CLASS}]+$"},
    "example": {"core": "total"},
}
METRIC_NAME: Json = {
    "description": "A built-in name, or custom.<part>(.<part>)* with parts of [a-z0-9_]",
    "anyOf": [
        {"type": "string", "enum": [spec.name for spec in METRIC_SPECS]},
        {"type": "string", "pattern": r"^custom(\.[a-z0-9_]+)+$", "maxLength": MAX_NAME_LEN},
    ],
}

SCHEMAS: dict[str, Json] = {
    "Error": {"type": "object", "required": ["error"], "additionalProperties": False,
              "properties": {"error": {"type": "string", "minLength": 1,
                                       "example": "metrics[3].value: must be finite"}}},
    "Status": {"type": "object", "required": ["status"],
               "properties": {"status": {"type": "string", "enum": ["ok"]}}},
    "Unready": {"type": "object", "required": ["status", "error"],
                "properties": {"status": {"type": "string", "enum": ["unavailable"]},
                               "error": {"type": "string"}}},
    "Metric": {
        "type": "object", "required": ["time", "name", "value"],
        "properties": {
            "time": {**TIME, "description": "RFC 3339 with an offset; at most 10 minutes "
                                            "in the future"},
            "host": {**HOST, "description": "Equal to the batch host (inherited when absent)"},
            "name": METRIC_NAME,
            "value": {"type": "number", "minimum": -MAX_ABS_VALUE, "maximum": MAX_ABS_VALUE,
                      "description": "Finite, within ±1e100 (so that every aggregate stays "
                                     "finite); not a boolean or a string"},
            "labels": LABELS,
        },
    },
    "MetricBatch": {
        "type": "object", "required": ["host", "metrics"],
        "properties": {
            "host": HOST,
            "batch_id": {"type": "string", "format": "uuid",
                         "description": "A batch whose id was stored before is acknowledged "
                                        "again without being stored twice"},
            "metrics": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH,
                        "items": ref("Metric")},
        },
    },
    "Ingested": {"type": "object", "required": ["ingested"],
                 "properties": {"ingested": {"type": "integer", "minimum": 1}}},
    "Point": {"type": "object", "required": ["time", "value"],
              "properties": {"time": {**TIME, "description": "Bucket start, UTC"},
                             "value": {"type": "number"}}},
    "Series": {"type": "object", "required": ["labels", "points"],
               "properties": {"labels": {"type": "object",
                                         "additionalProperties": {"type": "string"}},
                              "points": {"type": "array", "items": ref("Point")}}},
    "MetricQueryResult": {
        "type": "object", "required": ["host", "name", "bucket", "agg"],
        "description": "`points` without group_by; `series` with it",
        "properties": {
            "host": {"type": "string", "nullable": True,
                     "description": "null for a fleet-wide query (no host given)"},
            "name": {"type": "string"},
            "bucket": {"type": "string", "enum": list(BUCKETS)},
            "agg": {"type": "string", "enum": list(AGGREGATES)},
            "points": {"type": "array", "items": ref("Point")},
            "series": {"type": "array", "items": ref("Series")},
        },
    },
    "MetricHosts": {"type": "object", "required": ["hosts"],
                    "properties": {"hosts": {"type": "array", "items": {"type": "string"}}}},
}

# --- operations ----------------------------------------------------------------------------

BEARER: list[Json] = [{"bearerAuth": []}]  # OpenAPI 3.0: http schemes list no scopes
GZIP_HEADER: Json = {"name": "Content-Encoding", "in": "header", "required": False,
                     "description": "gzip (or x-gzip) for a compressed body; identity, empty "
                                    "or absent for a plain one; case-insensitive. Anything "
                                    "else is a 415",
                     "schema": {"type": "string", "enum": ["gzip", "x-gzip", "identity", ""]}}

METRIC_QUERY_PARAMS: list[Json] = [
    query_param("host", "Host name; without it the query is fleet-wide: every host's points "
                        "aggregated as one series, or one series per host with group_by=host "
                        "(fleet-wide queries read raw points: at most 30 days)",
                {"type": "string"}),
    query_param("name", "Metric name", METRIC_NAME, required=True),
    query_param("from", "Window start (inclusive), RFC 3339", TIME, required=True),
    query_param("to", "Window end (inclusive), RFC 3339; after from, at most 30 days later, "
                      "or 400 days when the query is served from a rollup (TimescaleDB; "
                      "bucket 1h or 1d; agg avg, min, max, sum, count or last)",
                TIME, required=True),
    query_param("bucket", "Bucket width; buckets are aligned to the UTC epoch and labelled "
                          "by their start", {"type": "string", "enum": list(BUCKETS),
                                             "default": "1m"}),
    query_param("agg", "Aggregate per bucket; percentiles interpolate linearly",
                {"type": "string", "enum": list(AGGREGATES), "default": "avg"}),
    query_param("label", "key:value filter (split at the first colon); repeatable, all must "
                         "match", {"type": "array", "items": {"type": "string"}},
                style="form", explode=True),
    query_param("group_by", "Label key: answer one series per value, labelled {key: value}; "
                            "`host`: one series per host, labelled {\"host\": h} (the host, "
                            "never a label named host); the series count is capped",
                {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}),
]

OPERATIONS: dict[str, dict[str, Json]] = {
    "/healthz": {"get": {
        "summary": "Liveness", "tags": ["health"], "security": [],
        "responses": {"200": response("The process runs", "Status")}}},
    "/readyz": {"get": {
        "summary": "Readiness: the database answers", "tags": ["health"], "security": [],
        "responses": {"200": response("Ready", "Status"),
                      "503": with_headers(response("The database is unavailable",
                                                   "Unready"), Retry_After=RETRY_AFTER)}}},
    "/api/v1/metrics": {"post": {
        "summary": "Ingest a metric batch (stored whole or not at all)", "tags": ["metrics"],
        "security": BEARER, "x-token-scope": "ingest", "parameters": [GZIP_HEADER],
        "requestBody": {"required": True, "content": json_content(ref("MetricBatch"))},
        "responses": {"202": response("Stored (or a known batch_id acknowledged)", "Ingested"),
                      **errors("400", "401", "403", "409", "413", "415", "503")}}},
    "/api/v1/metrics/query": {"get": {
        "summary": "Bucketed aggregates of one series", "tags": ["metrics"],
        "security": BEARER, "x-token-scope": "read", "parameters": METRIC_QUERY_PARAMS,
        "responses": {"200": response("Points in ascending time; empty buckets omitted",
                                      "MetricQueryResult"),
                      **errors("400", "401", "403", "503")}}},
    "/api/v1/metrics/hosts": {"get": {
        "summary": "Hosts that sent metrics, sorted", "tags": ["metrics"],
        "security": BEARER, "x-token-scope": "read",
        "responses": {"200": response("Host names", "MetricHosts"),
                      **errors("401", "403", "503")}}},
    "/api/v1/openapi.json": {"get": {
        "summary": "This document", "tags": ["meta"], "security": [],
        "responses": {"200": {"description": "OpenAPI 3.0 document",
                              "content": {"application/json": {"schema": {"type": "object"}}}}}}},
}

def add_operation(path: str, method: str, operation: Json) -> None:
    """Describe one more endpoint (used by resources registered after this module)."""
    OPERATIONS.setdefault(path, {})[method.lower()] = operation


def add_schema(name: str, schema: Json) -> None:
    """Describe one more component schema."""
    SCHEMAS[name] = schema


def build_document() -> Json:
    """The whole OpenAPI document, as a fresh dict."""
    paths = copy.deepcopy(OPERATIONS)
    for path, operations in paths.items():
        for operation in operations.values():
            answers = operation["responses"]
            for code, answer in EVERY_OPERATION.items():
                if not (code == "503" and path == "/healthz"):
                    answers.setdefault(code, copy.deepcopy(answer))
    return {
        "openapi": "3.0.3",
        "info": {"title": "MiniObserv API", "version": __version__,
                 "description": "Metrics and logs of a fleet of hosts. Errors are "
                                "`{\"error\": \"<message naming the field>\"}`; request "
                                "bodies may be gzip-compressed. A path no operation "
                                "describes answers components.responses.NotFound, a method "
                                "a path does not take MethodNotAllowed (with Allow); "
                                "414 and 431 come from gunicorn, as HTML."},
        "paths": paths,
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "responses": copy.deepcopy(ROUTING_ERRORS),
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "HS256 JWT signed with AGENT_TOKEN (read tokens: with "
                               "READ_SECRET when the server has one); iss miniobserv-agent or "
                               "miniobserv; exp required, lifetime at most TOKEN_MAX_TTL; "
                               "optional scope ingest or read"}},
        },
        "security": [{"bearerAuth": []}],
    }


def open_to_public(document: Json, public: Collection[str]) -> None:
    """Mark public (``security: []``) each operation whose ``x-auth`` variable opened it.

    Operations say what they need by default (a read token); ``public`` names the variables
    (``DASHBOARD_AUTH``, ``METRICS_AUTH``) that this server's configuration set to none.
    """
    for operations in document["paths"].values():
        for operation in operations.values():
            if operation.get("x-auth") in public:
                operation["security"] = []


@bp.get("/api/v1/openapi.json")
def openapi() -> Response:
    """Serve the document (public), describing only the routes this app has, as configured."""
    document = build_document()
    routed = {re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
              for rule in current_app.url_map.iter_rules()}
    document["paths"] = {path: ops for path, ops in document["paths"].items() if path in routed}
    config = current_config()
    open_to_public(document, {name for name, is_public in (
        ("DASHBOARD_AUTH", is_dashboard_public(config)),
        ("METRICS_AUTH", is_metrics_public(config))) if is_public})
    return jsonify(document)
