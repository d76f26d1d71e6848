"""``/api/v1/hosts`` and ``/api/v1/alerts`` ("dashboard" endpoints, SPEC §3, §4).

Both need a read token unless ``DASHBOARD_AUTH=none``; with ``DASHBOARD_ENABLED=false``
they need one whatever DASHBOARD_AUTH says (no dashboard, nothing public).

Both read the database, never a process's memory, so every worker answers alike. Host status
is computed at request time from ``last_seen`` and ``HOST_STALE_AFTER``/``HOST_DOWN_AFTER``;
alert states are what the evaluating process last saved, for the rules configured now.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify

from miniobserv.model import format_time
from miniobserv.rules import OPERATORS, AlertRule
from miniobserv.server.alerting.state import HOST_DOWN, HOST_OK, HOST_STALE, host_status
from miniobserv.server.api import openapi
from miniobserv.server.api.auth import require_dashboard
from miniobserv.server.api.context import current_config, current_repos
from miniobserv.server.storage.base import ALERT_STATES, AlertState
from miniobserv.server.storage.shaping import canonical_labels

bp = Blueprint("fleet", __name__, url_prefix="/api/v1")


@bp.get("/hosts")
@require_dashboard
def hosts() -> Response:
    """Every host with its status (ok, stale, down) and last-seen time, sorted by name."""
    config = current_config()
    now = datetime.now(UTC)
    return jsonify(hosts=[
        {"host": seen.host,
         "status": host_status(seen.last_seen, now, config.host_stale_after,
                               config.host_down_after),
         "last_seen": format_time(seen.last_seen)}
        for seen in current_repos().fleet.last_seen()])


@bp.get("/alerts")
@require_dashboard
def alerts() -> Response:
    """The state of every configured rule on every series it evaluated, in rule order."""
    rules = current_config().alert_rules
    order = {rule.key: index for index, rule in enumerate(rules)}
    states = [s for s in current_repos().fleet.alert_states() if s.rule_key in order]
    states.sort(key=lambda s: (order[s.rule_key], s.host, canonical_labels(s.labels)))
    return jsonify(alerts=[alert_json(rules[order[s.rule_key]], s) for s in states])


def alert_json(rule: AlertRule, state: AlertState) -> dict[str, Any]:
    """The SPEC shape, plus the series' own ``labels`` (several series may share a rule)."""
    return {"rule": rule.to_json(), "host": state.host, "labels": dict(state.labels),
            "state": state.state, "value": state.value, "since": format_time(state.since),
            "updated_at": format_time(state.updated_at)}


# --- the OpenAPI description ---------------------------------------------------------------

DASHBOARD_AUTH = "DASHBOARD_AUTH"  # x-auth: the variable that can make an endpoint public
DASHBOARD_NOTE = ("A dashboard endpoint: needs a read token unless DASHBOARD_AUTH=none (and "
                  "always when DASHBOARD_ENABLED=false).")

openapi.add_schema("Host", {
    "type": "object", "required": ["host", "status", "last_seen"],
    "properties": {
        "host": {"type": "string"},
        "status": {"type": "string", "enum": [HOST_OK, HOST_STALE, HOST_DOWN],
                   "description": "ok: seen within HOST_STALE_AFTER; stale: within "
                                  "HOST_DOWN_AFTER; down: longer ago"},
        "last_seen": {**openapi.TIME, "description": "When its last batch was accepted"},
    },
})
openapi.add_schema("Hosts", {"type": "object", "required": ["hosts"], "properties": {
    "hosts": {"type": "array", "items": openapi.ref("Host")}}})
openapi.add_schema("AlertRule", {
    "type": "object", "required": ["host", "name", "labels", "op", "threshold", "for"],
    "properties": {
        "host": {"type": "string", "description": "A host, or * for every host"},
        "name": openapi.METRIC_NAME, "labels": openapi.LABELS,
        "op": {"type": "string", "enum": list(OPERATORS)},
        "threshold": {"type": "number"},
        "for": {"type": "string", "example": "5m",
                "description": "How long the condition must hold at every evaluation"},
    },
})
openapi.add_schema("Alert", {
    "type": "object",
    "required": ["rule", "host", "labels", "state", "value", "since", "updated_at"],
    "properties": {
        "rule": openapi.ref("AlertRule"),
        "host": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"},
                   "description": "The labels of the evaluated series"},
        "state": {"type": "string", "enum": list(ALERT_STATES)},
        "value": {"type": "number", "nullable": True,
                  "description": "The newest value seen; null without data"},
        "since": {**openapi.TIME, "description": "When the current state began"},
        "updated_at": {**openapi.TIME, "description": "The last evaluation"},
    },
})
openapi.add_schema("Alerts", {"type": "object", "required": ["alerts"], "properties": {
    "alerts": {"type": "array", "items": openapi.ref("Alert")}}})
openapi.add_operation("/api/v1/hosts", "get", {
    "summary": "Hosts with their status", "tags": ["fleet"], "security": openapi.BEARER,
    "description": DASHBOARD_NOTE, "x-token-scope": "read", "x-auth": DASHBOARD_AUTH,
    "responses": {"200": openapi.response("Hosts sorted by name", "Hosts"),
                  **openapi.errors("401", "403", "503")}})
openapi.add_operation("/api/v1/alerts", "get", {
    "summary": "The state of every configured alert rule on each series it evaluated",
    "tags": ["fleet"], "security": openapi.BEARER, "description": DASHBOARD_NOTE,
    "x-token-scope": "read", "x-auth": DASHBOARD_AUTH,
    "responses": {"200": openapi.response("Alert states in rule order", "Alerts"),
                  **openapi.errors("401", "403", "503")}})
