"""The HTTP API: one blueprint per resource plus the JSON error envelope."""

from __future__ import annotations

from flask import Flask

from miniobserv.server.api import health, logs, metrics, openapi
from miniobserv.server.api.errors import register_error_handlers

BLUEPRINTS = (health.bp, metrics.bp, logs.bp, openapi.bp)


def register(app: Flask) -> None:
    """Wire every blueprint and error handler into ``app``."""
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    register_error_handlers(app)
