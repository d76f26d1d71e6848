"""``GET /metrics``: Prometheus text exposition 0.0.4 (SPEC §3).

A read token (``Authorization: Bearer``, as Prometheus' ``authorization`` scrape setting
sends it) unless ``METRICS_AUTH=none`` keeps the Prometheus convention of a public page.

The newest raw point of every series that reported within ``EXPOSITION_WINDOW`` (or
``HOST_DOWN_AFTER`` when longer), read in ONE query for all hosts, as
``miniobserv_<name with . as _>{host="…",<series labels>}`` with HELP and TYPE from the one
list of metric names; then the server's own counters and histograms, totals over every
worker (:mod:`miniobserv.server.telemetry`). Series labels named ``host`` become
``exported_host`` and those starting with ``__`` (reserved by Prometheus) get a ``label``
prefix, so no label is lost or overwritten.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta

from flask import Blueprint, Response, current_app
from prometheus_client import generate_latest
from prometheus_client.core import Metric

from miniobserv.model import METRIC_SPEC_BY_NAME
from miniobserv.server.api import openapi
from miniobserv.server.api.auth import require_metrics
from miniobserv.server.api.context import current_config, current_repos
from miniobserv.server.storage.base import LatestValue
from miniobserv.server.telemetry import EXTENSION_KEY, Telemetry

bp = Blueprint("exposition", __name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
EXPOSITION_WINDOW = timedelta(minutes=5)  # Prometheus' own staleness horizon
PREFIX = "miniobserv_"


def exposed_name(name: str) -> str:
    """``cpu.usage_pct`` → ``miniobserv_cpu_usage_pct``."""
    return PREFIX + name.replace(".", "_")


def exposed_label(key: str) -> str:
    """A series label key as a Prometheus label name that cannot clash with ``host``."""
    if key == "host":
        return "exported_host"
    return "label" + key if key.startswith("__") else key


def help_text(name: str) -> str:
    spec = METRIC_SPEC_BY_NAME.get(name)
    return spec.help if spec is not None else f"Custom metric {name}"


class LatestCollector:
    """Turns newest values into gauge families, one per metric name, sorted."""

    def __init__(self, latest: Sequence[LatestValue]) -> None:
        self._latest = latest

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for value in sorted(self._latest, key=lambda v: v.name):
            name = exposed_name(value.name)
            family = families.get(name)
            if family is None:
                family = families[name] = Metric(name, help_text(value.name), "gauge")
            labels = {"host": value.host,
                      **{exposed_label(k): v for k, v in sorted(value.labels.items())}}
            family.add_sample(name, labels, value.value)
        yield from families.values()


def exposition_text(latest: Iterable[LatestValue], telemetry: Telemetry | None) -> bytes:
    """The whole document: series first, then the server's own metrics."""
    text = bytes(generate_latest(LatestCollector(list(latest))))
    return text + (telemetry.exposition() if telemetry is not None else b"")


@bp.get("/metrics")
@require_metrics
def metrics() -> Response:
    """The exposition; one query for the newest value of every series."""
    window = max(EXPOSITION_WINDOW, current_config().host_down_after)
    latest = current_repos().fleet.latest(datetime.now(UTC) - window)
    telemetry = current_app.extensions.get(EXTENSION_KEY)
    return Response(exposition_text(latest, telemetry), content_type=CONTENT_TYPE)


openapi.add_operation("/metrics", "get", {
    "summary": "Prometheus text exposition 0.0.4", "tags": ["fleet"],
    "security": openapi.BEARER, "x-token-scope": "read", "x-auth": "METRICS_AUTH",
    "description": "The newest point of every series as miniobserv_<name>{host,<labels>}, "
                   "then the server's own counters and latency histograms (totals over all "
                   "worker processes). Needs a read token unless METRICS_AUTH=none.",
    "responses": {"200": {"description": "Text exposition", "content": {
        "text/plain": {"schema": {"type": "string"}}}},
        **openapi.errors("401", "403", "503")}})
