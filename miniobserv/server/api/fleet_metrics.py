"""Fleet-wide metric reads: ``/api/v1/metrics/latest`` and ``/api/v1/metrics/top`` (read).

``latest`` is the newest value of every matching series over a recent window (what a fleet
table shows); ``top`` ranks hosts by one aggregate over a range (the busiest, the fullest).
Both are bounded before they answer: ``latest`` by MAX_QUERY_POINTS series (a 400 beyond,
asking for host or label filters: a partial table would look complete), ``top`` by its
``limit`` and by the raw query's 30-day range. The fleet-wide form of ``/query`` (no
``host``, ``group_by=host``) lives with the per-host one in :mod:`.metrics`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.datastructures import MultiDict

from miniobserv.config import format_duration, parse_duration
from miniobserv.errors import ValidationError
from miniobserv.model import check_host, check_name, format_time
from miniobserv.server.api import openapi
from miniobserv.server.api.auth import READ, require
from miniobserv.server.api.context import current_config, current_repos
from miniobserv.server.api.jsonio import answer_response, wire_time
from miniobserv.server.api.metrics import (
    DEFAULT_AGG,
    MAX_RANGE,
    _choice,
    _required,
    parse_label_filters,
    parse_query_time,
)
from miniobserv.server.storage.base import AGGREGATES, TOP_ORDERS, LatestValue, TopQuery

bp = Blueprint("fleet_metrics", __name__, url_prefix="/api/v1/metrics")

DEFAULT_WITHIN = timedelta(minutes=5)
MIN_WITHIN = timedelta(seconds=10)  # below an agent's usual interval a window finds nothing
MAX_WITHIN = timedelta(days=1)  # "newest value" of older data is history: use /query
DEFAULT_TOP_LIMIT = 10
MAX_TOP_LIMIT = 100


@bp.get("/latest")
@require(READ)
def latest() -> Response:
    """The newest value of every series of ``name`` (filtered) within ``within``."""
    return answer_response(latest_answer(request.args))


@bp.get("/top")
@require(READ)
def top() -> Response:
    """The hosts with the highest (or lowest) aggregate of ``name`` over ``from..to``."""
    query = parse_top_query(request.args)
    hosts = current_repos().metrics.top(query)
    return jsonify(name=query.name, agg=query.agg, order=query.order,
                   **{"from": format_time(query.start), "to": format_time(query.end)},
                   hosts=[{"host": h.host, "value": h.value} for h in hosts])


def latest_answer(args: MultiDict[str, str]) -> dict[str, Any]:
    """Validate, read at most MAX_QUERY_POINTS + 1 series, refuse more, shape the answer.

    Shared by ``/api/v1/metrics/latest`` and the dashboard's ``/api/v1/dashboard/fleet``.
    """
    name = check_name(_required(args, "name"))
    host_text = args.get("host")
    host = None if host_text is None else check_host(host_text)
    labels = parse_label_filters(args.getlist("label"))
    within = parse_within(args.get("within"))
    cap = current_config().max_query_points
    since = datetime.now(UTC) - within
    values = current_repos().fleet.latest(since, name=name, host=host, labels=labels,
                                          limit=cap + 1)
    if len(values) > cap:
        raise ValidationError("label", f"more than {cap} series match (MAX_QUERY_POINTS): "
                                       "add a host or label filter")
    return {"name": name, "within": format_duration(within), "since": format_time(since),
            "series": [latest_json(value) for value in values]}


def latest_json(value: LatestValue) -> dict[str, Any]:
    labels = value.labels  # the stores' dicts are written as they are (orjson: dicts only)
    return {"host": value.host, "labels": labels if type(labels) is dict else dict(labels),
            "time": wire_time(value.time), "value": value.value}


def parse_within(text: str | None) -> timedelta:
    """``within`` (default 5m): a duration from MIN_WITHIN to MAX_WITHIN, both included."""
    if text is None:
        return DEFAULT_WITHIN
    bounds = f"a duration from {format_duration(MIN_WITHIN)} to {format_duration(MAX_WITHIN)}"
    try:
        within = parse_duration(text)
    except ValueError:
        raise ValidationError("within", f"must be {bounds}, e.g. 5m") from None
    if not MIN_WITHIN <= within <= MAX_WITHIN:
        raise ValidationError("within", f"must be {bounds}")
    return within


def parse_top_query(args: MultiDict[str, str]) -> TopQuery:
    """Validate ``/top``'s parameters; ValidationError names the parameter."""
    name = check_name(_required(args, "name"))
    start = parse_query_time(_required(args, "from"), "from")
    end = parse_query_time(_required(args, "to"), "to")
    if start >= end:
        raise ValidationError("from", "must be before to")
    if end - start > MAX_RANGE:
        raise ValidationError("to", f"the range from..to must be at most {MAX_RANGE.days} days")
    return TopQuery(name=name, start=start, end=end,
                    agg=_choice(args, "agg", DEFAULT_AGG, AGGREGATES),
                    labels=parse_label_filters(args.getlist("label")),
                    limit=parse_top_limit(args.get("limit")),
                    order=_choice(args, "order", TOP_ORDERS[0], TOP_ORDERS))


def parse_top_limit(text: str | None) -> int:
    """``limit`` (default 10): an integer from 1 to MAX_TOP_LIMIT; anything else is a 400."""
    if text is None:
        return DEFAULT_TOP_LIMIT
    problem = f"must be an integer from 1 to {MAX_TOP_LIMIT}"
    if not (text.isascii() and text.isdigit()) or len(text) > 4:
        raise ValidationError("limit", problem)
    if not 1 <= int(text) <= MAX_TOP_LIMIT:
        raise ValidationError("limit", problem)
    return int(text)


# --- the OpenAPI description ---------------------------------------------------------------

openapi.add_schema("FleetLatestValue", {
    "type": "object", "required": ["host", "labels", "time", "value"],
    "properties": {"host": {"type": "string"},
                   "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                   "time": {**openapi.TIME, "description": "The newest point's time"},
                   "value": {"type": "number"}}})
openapi.add_schema("FleetLatest", {
    "type": "object", "required": ["name", "within", "since", "series"],
    "properties": {
        "name": {"type": "string"},
        "within": {"type": "string", "example": "5m", "description": "The window used"},
        "since": {**openapi.TIME, "description": "The window's start (now - within)"},
        "series": {"type": "array", "items": openapi.ref("FleetLatestValue"),
                   "description": "One entry per series, sorted by host then labels"}}})
openapi.add_schema("TopHosts", {
    "type": "object", "required": ["name", "agg", "from", "to", "order", "hosts"],
    "properties": {
        "name": {"type": "string"}, "agg": {"type": "string", "enum": list(AGGREGATES)},
        "from": openapi.TIME, "to": openapi.TIME,
        "order": {"type": "string", "enum": list(TOP_ORDERS)},
        "hosts": {"type": "array", "description": "Ranked by value; ties by host name",
                  "items": {"type": "object", "required": ["host", "value"],
                            "properties": {"host": {"type": "string"},
                                           "value": {"type": "number"}}}}}})

LATEST_PARAMS: list[openapi.Json] = [
    openapi.query_param("name", "Metric name", openapi.METRIC_NAME, required=True),
    openapi.query_param("host", "Only this host's series", {"type": "string"}),
    openapi.query_param("label", "key:value filter (split at the first colon); repeatable, "
                                 "all must match", {"type": "array", "items": {"type": "string"}},
                        style="form", explode=True),
    openapi.query_param("within", f"Only series with a point this recent: a duration from "
                                  f"{format_duration(MIN_WITHIN)} to "
                                  f"{format_duration(MAX_WITHIN)}",
                        {"type": "string", "default": format_duration(DEFAULT_WITHIN)}),
]
LATEST_NOTE = ("At most MAX_QUERY_POINTS series: more is a 400 naming `label` (add a host or "
               "label filter); never a partial answer.")

openapi.add_operation("/api/v1/metrics/latest", "get", {
    "summary": "The newest value of every matching series (fleet-wide)", "tags": ["metrics"],
    "description": LATEST_NOTE, "security": openapi.BEARER, "x-token-scope": "read",
    "parameters": LATEST_PARAMS,
    "responses": {"200": openapi.response("Series sorted by host, then labels", "FleetLatest"),
                  **openapi.errors("400", "401", "403", "503")}})
openapi.add_operation("/api/v1/metrics/top", "get", {
    "summary": "Hosts ranked by an aggregate over a range", "tags": ["metrics"],
    "security": openapi.BEARER, "x-token-scope": "read",
    "parameters": [
        openapi.query_param("name", "Metric name", openapi.METRIC_NAME, required=True),
        openapi.query_param("from", "Range start (inclusive), RFC 3339", openapi.TIME,
                            required=True),
        openapi.query_param("to", f"Range end (inclusive); after from, at most "
                                  f"{MAX_RANGE.days} days later", openapi.TIME, required=True),
        openapi.query_param("agg", "Aggregate of each host's points over the whole range",
                            {"type": "string", "enum": list(AGGREGATES),
                             "default": DEFAULT_AGG}),
        openapi.query_param("limit", "How many hosts", {"type": "integer", "minimum": 1,
                                                        "maximum": MAX_TOP_LIMIT,
                                                        "default": DEFAULT_TOP_LIMIT}),
        openapi.query_param("order", "desc: highest first; asc: lowest first",
                            {"type": "string", "enum": list(TOP_ORDERS), "default": "desc"}),
        LATEST_PARAMS[2],
    ],
    "responses": {"200": openapi.response("Hosts with matching points, ranked", "TopHosts"),
                  **openapi.errors("400", "401", "403", "503")}})
