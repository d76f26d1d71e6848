"""Liveness and readiness probes (public)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify

from miniobserv.server.api.context import current_repos
from miniobserv.server.api.errors import readiness_unavailable

logger = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """200 while the process runs; touches nothing else."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """200 when the database answers a trivial query now, 503 (with ``Retry-After``)
    otherwise."""
    try:
        current_repos().ping()
    except Exception as err:  # noqa: BLE001 - any failure is "not ready"; reason goes to the log
        logger.warning("readiness check failed: %s: %s", type(err).__name__, err)
        return readiness_unavailable()
    return jsonify(status="ok"), 200
