"""The live dashboard: ``GET /``, its assets and its data endpoints (SPEC §3, §4).

Registered only with ``DASHBOARD_ENABLED`` (the default). The page and its assets hold no
data and load without a token, so that the page can ask for one (or read it from the URL
fragment ``#token=`` that ``miniobserv demo`` and ``serve`` print); the data endpoints need
a read token unless ``DASHBOARD_AUTH=none``, and the log lines need one always. They answer what ``/api/v1/metrics/query`` and
``/api/v1/logs/query`` answer (same parameters, same validation), plus the newest value of
each series of a host, which is the current value the page shows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from flask import Blueprint, Response, jsonify, request, send_from_directory

from miniobserv.errors import ValidationError
from miniobserv.model import MAX_FUTURE, check_host, format_time
from miniobserv.server.api import fleet_metrics, logs, metrics, openapi
from miniobserv.server.api.auth import READ, require, require_dashboard
from miniobserv.server.api.context import current_config, current_repos
from miniobserv.server.api.errors import ApiError
from miniobserv.server.api.fleet import DASHBOARD_AUTH, DASHBOARD_NOTE
from miniobserv.server.api.jsonio import answer_response

bp = Blueprint("dashboard", __name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
ASSETS = frozenset({"dashboard.css", "dashboard.js"})


@bp.get("/")
def page() -> Response:
    """The single page (no data in it: it fetches everything from the endpoints below)."""
    response = send_from_directory(STATIC_DIR, "dashboard.html", max_age=0)
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'")
    return response


@bp.get("/dashboard/<name>")
def asset(name: str) -> Response:
    """The page's script and style sheet (vendored here: no CDN, no external request)."""
    if name not in ASSETS:
        raise ApiError(404, "not found")
    return send_from_directory(STATIC_DIR, name, max_age=60)


@bp.get("/api/v1/dashboard/query")
@require_dashboard
def query() -> Response:
    """``/api/v1/metrics/query`` for the page."""
    store = current_repos().metrics
    metric_query = metrics.checked_query(request.args, store, current_config().max_query_points)
    return answer_response(metrics.query_answer(metric_query, store.query(metric_query)))


@bp.get("/api/v1/dashboard/logs")
@require(READ)
def log_lines() -> Response:
    """``/api/v1/logs/query`` for the page: a read token always (log search is never public)."""
    page_ = current_repos().logs.query(logs.parse_log_query(request.args))
    return jsonify(logs.query_answer(page_))


@bp.get("/api/v1/dashboard/fleet")
@require_dashboard
def fleet() -> Response:
    """``/api/v1/metrics/latest`` for the page's fleet table (same parameters and answer)."""
    return answer_response(fleet_metrics.latest_answer(request.args))


@bp.get("/api/v1/dashboard/latest")
@require_dashboard
def latest() -> Response:
    """The newest point of every series of ``host`` since ``from``: names, labels, values."""
    host = request.args.get("host")
    if host is None:
        raise ValidationError("host", "is required")
    since_text = request.args.get("from")
    if since_text is None:
        raise ValidationError("from", "is required")
    since = check_since(metrics.parse_query_time(since_text, "from"), datetime.now(UTC))
    values = current_repos().fleet.latest(since, host=check_host(host))
    return jsonify(host=host, series=[
        {"name": v.name, "labels": dict(v.labels), "time": format_time(v.time),
         "value": v.value} for v in values])


def check_since(since: datetime, now: datetime) -> datetime:
    """``since`` when ``[since, now]`` is a range the query API allows (at most MAX_RANGE,
    and ``since`` not past the clock-skew guard); else ValidationError naming ``from``."""
    if since < now - metrics.MAX_RANGE:
        raise ValidationError("from", f"must be at most {metrics.MAX_RANGE.days} days ago")
    if since > now + MAX_FUTURE:
        raise ValidationError("from", f"must not be more than "
                                      f"{MAX_FUTURE.seconds // 60} minutes in the future")
    return since


# --- the OpenAPI description ---------------------------------------------------------------

_HTML = {"text/html": {"schema": {"type": "string"}}}
openapi.add_schema("LatestValues", {
    "type": "object", "required": ["host", "series"],
    "properties": {
        "host": {"type": "string"},
        "series": {"type": "array", "items": {
            "type": "object", "required": ["name", "labels", "time", "value"],
            "properties": {"name": {"type": "string"},
                           "labels": {"type": "object",
                                      "additionalProperties": {"type": "string"}},
                           "time": {**openapi.TIME, "description": "The newest point's time"},
                           "value": {"type": "number"}}}},
    },
})
openapi.add_operation("/", "get", {
    "summary": "The live dashboard page (holds no data; asks for a token when needed)",
    "tags": ["dashboard"], "security": [],
    "responses": {"200": {"description": "HTML page", "content": _HTML}}})
openapi.add_operation("/dashboard/{name}", "get", {
    "summary": "The dashboard's script and style sheet", "tags": ["dashboard"], "security": [],
    "parameters": [{"name": "name", "in": "path", "required": True,
                    "schema": {"type": "string", "enum": sorted(ASSETS)}}],
    "responses": {"200": {"description": "The asset", "content": {
        "text/css": {"schema": {"type": "string"}},
        "text/javascript": {"schema": {"type": "string"}}}},
        "404": openapi.response("No such asset")}})
openapi.add_operation("/api/v1/dashboard/query", "get", {
    "summary": "The page's metric queries: /api/v1/metrics/query", "tags": ["dashboard"],
    "security": openapi.BEARER, "x-token-scope": "read", "x-auth": DASHBOARD_AUTH,
    "description": DASHBOARD_NOTE,
    "parameters": openapi.METRIC_QUERY_PARAMS,
    "responses": {"200": openapi.response("As /api/v1/metrics/query", "MetricQueryResult"),
                  **openapi.errors("400", "401", "403", "503")}})
openapi.add_operation("/api/v1/dashboard/logs", "get", {
    "summary": "The page's log lines: /api/v1/logs/query", "tags": ["dashboard"],
    "security": openapi.BEARER, "x-token-scope": "read",
    "description": "Always needs a read token: log search is never public, not even under "
                   "DASHBOARD_AUTH=none.",
    "parameters": logs.LOG_QUERY_PARAMS,
    "responses": {"200": openapi.response("As /api/v1/logs/query", "LogPage"),
                  **openapi.errors("400", "401", "403", "503")}})
openapi.add_operation("/api/v1/dashboard/fleet", "get", {
    "summary": "The page's fleet table: as /api/v1/metrics/latest", "tags": ["dashboard"],
    "security": openapi.BEARER, "x-token-scope": "read", "x-auth": DASHBOARD_AUTH,
    "description": DASHBOARD_NOTE, "parameters": fleet_metrics.LATEST_PARAMS,
    "responses": {"200": openapi.response("As /api/v1/metrics/latest", "FleetLatest"),
                  **openapi.errors("400", "401", "403", "503")}})
openapi.add_operation("/api/v1/dashboard/latest", "get", {
    "summary": "The newest point of every series of one host", "tags": ["dashboard"],
    "security": openapi.BEARER, "x-token-scope": "read", "x-auth": DASHBOARD_AUTH,
    "description": DASHBOARD_NOTE,
    "parameters": [openapi.query_param("host", "Host name", {"type": "string"}, required=True),
                   openapi.query_param("from", "Only series with a point since then; at "
                                               "most 30 days ago", openapi.TIME,
                                       required=True)],
    "responses": {"200": openapi.response("Series sorted by name and labels", "LatestValues"),
                  **openapi.errors("400", "401", "403", "503")}})
