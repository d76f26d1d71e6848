"""The server's own counters and request-latency histograms, as totals over all its workers.

prometheus_client's multiprocess mode: each gunicorn worker writes its values to memory-mapped
files in a directory shared by the workers of one master (named after the master's pid and
start time, so a restarted master starts from zero, as Prometheus expects of a restart), and
``/metrics`` sums every file, those of workers that were replaced included. Counting in the
database instead would add a write to every request; these files cost a memory write.
Outside gunicorn (``miniobserv serve``, the demo, tests) one process holds everything and
the values stay in memory.

Counted: every request by method, route and status, with its latency; accepted batches
with their points or entries; batches refused (400, 409, 413, 415) by kind and status.
Every label value comes from a closed set, so no request can add a series: a method outside
METHODS counts as ``other``, a path no route matches as ``(unmatched)``, a status outside
100-599 as ``other``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

from miniobserv.server.masterfiles import master_path, remove_stale

log = logging.getLogger(__name__)

EXTENSION_KEY = "miniobserv.telemetry"
INGEST_PATHS = {"/api/v1/metrics": "metrics", "/api/v1/logs": "logs"}
REJECTED_STATUSES = frozenset({400, 409, 413, 415})
MULTIPROCESS_PREFIX = "miniobserv-prometheus-"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
OTHER = "other"

# No ``*_created`` sample beside every counter and histogram (prometheus_client's default in
# one process; multiprocess mode has none): one series per value, in every mode.
disable_created_metrics()
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Telemetry:
    """The counters of one process; :meth:`exposition` answers for the whole server."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        # In multiprocess mode values live in the files; a registry would only repeat them.
        target = None if multiprocess_dir else self.registry
        self.requests = Counter("miniobserv_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=target)
        self.latency = Histogram("miniobserv_http_request_duration_seconds",
                                 "Time to answer an HTTP request", ["method", "route"],
                                 buckets=LATENCY_BUCKETS, registry=target)
        self.batches = Counter("miniobserv_ingested_batches", "Batches accepted", ["kind"],
                               registry=target)
        self.points = Counter("miniobserv_ingested_points", "Metric points accepted",
                              registry=target)
        self.entries = Counter("miniobserv_ingested_log_entries", "Log entries accepted",
                               registry=target)
        self.rejected = Counter("miniobserv_rejected_batches", "Batches refused as invalid",
                                ["kind", "status"], registry=target)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}  # see _child

    def exposition(self) -> bytes:
        """The text exposition of these counters, summed over every worker."""
        if self.multiprocess_dir is None:
            return bytes(generate_latest(self.registry))
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        return bytes(generate_latest(registry))

    def install(self, app: Flask) -> None:
        """Time and count every request of ``app``."""
        app.extensions[EXTENSION_KEY] = self
        app.before_request(_start_timer)
        app.after_request(self._observe)

    def _observe(self, response: Response) -> Response:
        # The request's own objects once (each ``request`` attribute is a context lookup).
        req = request._get_current_object()  # type: ignore[attr-defined]
        rule = req.url_rule
        route = rule.rule if rule is not None else "(unmatched)"
        method = method_label(req.method)
        status = response.status_code
        self._child(self.requests, method, route, status_label(status)).inc()
        started = g.get("telemetry_started")
        if started is not None:
            self._child(self.latency, method, route).observe(time.perf_counter() - started)
        kind = INGEST_PATHS.get(req.path) if method == "POST" else None
        if kind is not None:
            self._count_batch(kind, status, response)
        return response

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: prometheus_client checks and converts the
        values and takes a lock at each call. Bounded as the label sets are (closed sets)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _count_batch(self, kind: str, status: int, response: Response) -> None:
        if status == 202:
            body: Any = response.get_json(silent=True) or {}
            count = body.get("ingested", 0) if isinstance(body, dict) else 0
            self._child(self.batches, kind).inc()
            (self.points if kind == "metrics" else self.entries).inc(count)
        elif status in REJECTED_STATUSES:
            self._child(self.rejected, kind, str(status)).inc()


def method_label(method: str) -> str:
    """The ``method`` label: a standard method, else ``other`` (any token is a method)."""
    return method if method in METHODS else OTHER


def status_label(status: int) -> str:
    """The ``status`` label: the code when it is a real HTTP status, else ``other``."""
    return str(status) if 100 <= status <= 599 else OTHER


def _start_timer() -> None:
    g.telemetry_started = time.perf_counter()


def telemetry_for_process(shared: bool) -> Telemetry:
    """In a gunicorn worker with ``shared``, multiprocess mode; else one process's counters."""
    if not shared or "gunicorn.arbiter" not in sys.modules:
        return Telemetry()
    remove_stale(MULTIPROCESS_PREFIX)  # those of masters that have exited
    directory = master_directory(os.getppid())
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
    except OSError as err:
        log.warning("telemetry: cannot create %s (%s): counters cover this worker only",
                    directory, err)
        return Telemetry()
    enable_multiprocess(str(directory))
    return Telemetry(str(directory))


def master_directory(master_pid: int) -> Path:
    """The directory shared by the workers of the gunicorn master ``master_pid``."""
    return master_path(MULTIPROCESS_PREFIX, master_pid)


def enable_multiprocess(directory: str) -> None:
    """Make every metric created from now on in this process write to ``directory``.

    prometheus_client chooses file-backed values from this variable; this process is a
    gunicorn worker serving one app, so the process-wide switch is the app's own.
    """
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()
