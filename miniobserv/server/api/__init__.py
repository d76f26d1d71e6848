"""The HTTP API: one blueprint per resource plus the JSON error envelope."""

from __future__ import annotations

from flask import Flask

from miniobserv.server.api import (
    dashboard,
    exposition,
    fleet,
    fleet_metrics,
    health,
    logs,
    metrics,
    openapi,
)
from miniobserv.server.api.context import current_config_of
from miniobserv.server.api.errors import register_error_handlers

BLUEPRINTS = (health.bp, metrics.bp, fleet_metrics.bp, logs.bp, fleet.bp, exposition.bp,
              openapi.bp)


def register(app: Flask) -> None:
    """Wire every blueprint and error handler into ``app``."""
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    if current_config_of(app).dashboard_enabled:  # DASHBOARD_ENABLED=false: no page, no data
        app.register_blueprint(dashboard.bp)
    register_error_handlers(app)
