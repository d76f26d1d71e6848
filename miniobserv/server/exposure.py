"""What a starting server tells its operator about who can read it (SPEC §4).

``miniobserv demo`` and ``miniobserv serve`` print a dashboard link carrying a read token in
its fragment (``/#token=…``): browsers never send the fragment to the server, and the page
removes it from the address bar once read, so the quick start opens in one click without
making the data public. When ``DASHBOARD_AUTH=none`` (or ``METRICS_AUTH=none``) opens reads
to anyone and the server listens beyond loopback, one warning says so at start.

Under gunicorn the bind address is gunicorn's, not ``LISTEN_ADDR``: :func:`gunicorn_binds`
reads it from the gunicorn application (or worker) that is importing the app. When it cannot
be found, the server is taken to be reachable from outside and the warning is logged.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
from collections.abc import Iterable
from datetime import datetime

from miniobserv.config import ServerConfig
from miniobserv.server.api.auth import is_dashboard_public, is_metrics_public
from miniobserv.tokens import DEFAULT_TTL, mint_token

logger = logging.getLogger(__name__)

LOCAL = "local"  # what a unix socket bind counts as: reachable from this host only


def connect_host(listen_host: str) -> str:
    """Where a local client reaches a server listening on ``listen_host``."""
    if listen_host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{listen_host}]" if ":" in listen_host else listen_host


def dashboard_token(config: ServerConfig, now: float | None = None) -> str:
    """A read token for the page: 24 h (or TOKEN_MAX_TTL when shorter), READ_SECRET's key."""
    return mint_token(config.read_key, ttl=min(DEFAULT_TTL, config.token_max_ttl),
                      scope="read", issuer="miniobserv", now=now)


def dashboard_link(base_url: str, token: str) -> str:
    """The page's address with ``token`` in the fragment, never sent to the server."""
    return f"{base_url.rstrip('/')}/#token={token}"


def token_expiry(config: ServerConfig, now: datetime) -> datetime:
    """When a :func:`dashboard_token` minted at ``now`` expires."""
    return now + min(DEFAULT_TTL, config.token_max_ttl)


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8, ``::1`` and unix sockets; False otherwise."""
    if host in ("localhost", LOCAL):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def open_reads(config: ServerConfig) -> list[str]:
    """The settings that make reads public: ``DASHBOARD_AUTH=none``, ``METRICS_AUTH=none``."""
    return [name for name, is_open in (("DASHBOARD_AUTH=none", is_dashboard_public(config)),
                                       ("METRICS_AUTH=none", is_metrics_public(config)))
            if is_open]


def warn_if_exposed(config: ServerConfig, listen_hosts: Iterable[str] | None) -> bool:
    """Log one warning when reads are public and the server listens beyond loopback.

    ``listen_hosts`` None means unknown, which counts as beyond. True when it warned.
    """
    opened = open_reads(config)
    hosts = None if listen_hosts is None else list(listen_hosts)
    if not opened or (hosts is not None and all(is_loopback(h) for h in hosts)):
        return False
    where = ", ".join(hosts) if hosts else "an address that could not be determined"
    logger.warning("%s and listening on %s: anyone who can reach the server reads the "
                   "fleet's hosts, alerts and metrics without a token", " and ".join(opened),
                   where)
    return True


def bind_host(bind: str) -> str | None:
    """The host of a gunicorn ``bind`` (``0.0.0.0:8000``, ``[::1]:80``, ``unix:/run/x``)."""
    if bind.startswith("unix:"):
        return LOCAL
    if bind.startswith("fd://"):
        return None
    if bind.startswith("["):
        return bind[1:].partition("]")[0]
    host, sep, port = bind.rpartition(":")
    return host if sep and port.isdigit() else bind


def gunicorn_binds() -> list[str] | None:
    """The hosts gunicorn binds, read from the gunicorn object importing the app; else None.

    gunicorn's arbiter and workers import the app from their own methods, so the caller's
    stack holds an object of gunicorn's with the parsed configuration (``cfg.bind``).
    """
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if type(owner).__module__.startswith("gunicorn."):
            binds = getattr(getattr(owner, "cfg", None), "bind", None)
            if isinstance(binds, list) and all(isinstance(b, str) for b in binds):
                hosts = [bind_host(b) for b in binds]
                return None if not hosts or None in hosts else [h for h in hosts if h]
        frame = frame.f_back  # type: ignore[assignment]
    return None
