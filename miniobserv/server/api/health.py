"""Liveness and readiness probes (public)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify

from miniobserv.server.api.context import current_repos

logger = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """200 while the process runs; touches nothing else."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """200 when the database answers a trivial query now, 503 otherwise."""
    try:
        current_repos().ping()
    except Exception as err:  # noqa: BLE001 - any failure is "not ready"; reason goes to the log
        logger.warning("readiness check failed: %s: %s", type(err).__name__, err)
        return jsonify(status="unavailable", error="database unavailable"), 503
    return jsonify(status="ok"), 200
