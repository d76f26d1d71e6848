"""gunicorn settings for production: ``gunicorn -c python:miniobserv.server.gunicorn_conf
'miniobserv.server.wsgi:app'``.

Why each setting:

- Threaded workers (``gthread``, ``THREADS`` each) with keep-alive: an idle or slow
  connection costs a socket, not a whole worker, so a few clients that send their headers
  slowly no longer hold every worker until the timeout (sync workers do: four slow
  connections stopped four sync workers). A worker still gives a thread to a connection that
  has started its request, so one worker serves others while fewer than ``THREADS`` clients
  trickle their headers to it; deployments facing untrusted clients put a proxy in front
  (``examples/nginx.conf``), which buffers whole requests. Agents reuse their connection:
  ``keepalive`` is above the idle timeouts of common agents and proxies.
- Request line and headers are bounded (``limit_request_*``): a token is a few hundred bytes.
- The configuration is read and checked here, in the master, before any worker forks: a bad
  variable is one line on stderr and exit status 2, once. ``on_starting`` then migrates the
  database once, with a bounded connection attempt, so a slow migration can no longer make
  gunicorn kill and restart workers that are still booting; the workers skip their own run.
  A database that cannot be reached does not stop the start: the workers retry the
  migrations before requests and readiness answers 503 until it is back.
- With ``DASHBOARD_AUTH=none`` or ``METRICS_AUTH=none`` and a bind beyond loopback, the master
  logs the warning once (without this file each worker logs it).
- ``timeout`` and ``graceful_timeout`` follow ``REQUEST_TIMEOUT`` and ``SHUTDOWN_TIMEOUT``.
- No control socket (gunicorn 25.1 and later open one by default, at one path per user,
  ``~/.gunicorn/gunicorn.ctl``, through which ``gunicornc`` can change the worker count or
  stop the server): a second server of the same user took over the first one's socket, and the
  first one's exit then removed it (checked with gunicorn 27.0.1). MiniObserv is managed by
  signals (``HUP``, ``TERM``) as before. Older gunicorn ignores the setting.

Every setting can be overridden as usual: command-line flags and ``GUNICORN_CMD_ARGS``
(e.g. ``--threads 64``) win over this file; ``WEB_CONCURRENCY`` sets the worker count;
``LISTEN_ADDR``, when set, is the bind address (``--bind`` wins over it).
"""

from __future__ import annotations

import os
from typing import Any

from miniobserv.server.exposure import bind_host, warn_if_exposed
from miniobserv.server.startup import (
    EXPOSURE_CHECKED_ENV,
    config_or_exit,
    configure_logging,
    migrate_before_fork,
)

CONFIG_ERROR = 2  # as `miniobserv serve`
WORKERS = 2  # unless WEB_CONCURRENCY says otherwise (gunicorn's own convention)
THREADS = 32
KEEPALIVE_S = 75
REQUEST_LINE_BYTES = 4094
HEADER_FIELDS = 50
HEADER_FIELD_BYTES = 8190
TIMEOUT_MARGIN_S = 20  # beyond REQUEST_TIMEOUT before gunicorn kills a silent worker

_config = config_or_exit(CONFIG_ERROR)
_request_s = int(_config.request_timeout.total_seconds())
_shutdown_s = int(_config.shutdown_timeout.total_seconds())

worker_class = "gthread"
threads = THREADS
if "WEB_CONCURRENCY" not in os.environ:
    workers = WORKERS
keepalive = KEEPALIVE_S
control_socket_disable = True
limit_request_line = REQUEST_LINE_BYTES
limit_request_fields = HEADER_FIELDS
limit_request_field_size = HEADER_FIELD_BYTES
timeout = _request_s + TIMEOUT_MARGIN_S
# Requests in flight finish within REQUEST_TIMEOUT, then the alerting threads within
# SHUTDOWN_TIMEOUT (at the worker's exit): both fit before gunicorn's SIGKILL.
graceful_timeout = _request_s + _shutdown_s
if os.environ.get("LISTEN_ADDR"):
    _host, _port = _config.listen_addr
    bind = [f"[{_host}]:{_port}" if ":" in _host else f"{_host}:{_port}"]


def on_starting(server: Any) -> None:
    """In the master, before the workers fork: logging, the exposure warning and the
    migrations, once for all workers."""
    configure_logging(_config.log_level)
    hosts = [bind_host(b) for b in server.cfg.bind]
    warn_if_exposed(_config, None if None in hosts else [h for h in hosts if h])
    os.environ[EXPOSURE_CHECKED_ENV] = "1"  # the workers inherit it and stay quiet
    migrate_before_fork(_config, os.environ)
