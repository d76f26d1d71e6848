"""Configuration from the environment, parsed once at start (SPEC §5).

Required values fail fast naming the variable. Optional values fall back to their default
when unset; when set but invalid or out of bounds, :class:`ConfigError` names the variable
and its bounds (a silent fallback hides typos).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miniobserv.errors import ConfigError, ValidationError
from miniobserv.model import check_host, check_labels
from miniobserv.units import (  # re-exported: callers import them from here too
    DurationTooLong,
    excerpt,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

if TYPE_CHECKING:
    from miniobserv.rules import AlertRule, Notification

MIN_SECRET_LEN = 16
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

DEFAULT_TOKEN_MAX_TTL = timedelta(days=30)
TOKEN_MAX_TTL_BOUNDS = (timedelta(minutes=1), timedelta(days=3650))
DEFAULT_SPOOL_MAX_BYTES = 256 << 20
SPOOL_MAX_BYTES_BOUNDS = (1 << 20, 64 << 30)


class _Env:
    """Reads typed values from an environment mapping, naming the variable on error."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def required(self, name: str) -> str:
        value = self.raw(name)
        if value is None:
            raise ConfigError(f"{name} is required")
        return value

    def secret(self, name: str) -> str:
        value = self.required(name)
        if len(value) < MIN_SECRET_LEN:
            raise ConfigError(f"{name} must be at least {MIN_SECRET_LEN} characters")
        return value

    def duration(self, name: str, default: timedelta, low: timedelta,
                 high: timedelta | None = None) -> timedelta:
        text = self.raw(name)
        bounds = f"{format_duration(low)} to {format_duration(high)}" if high else \
            f"at least {format_duration(low)}"
        if text is None:
            return default
        try:
            value = parse_duration(text)
        except DurationTooLong:
            raise ConfigError(f"{name}={excerpt(text)} is out of bounds: {bounds}") from None
        except ValueError:
            raise ConfigError(f"{name}={excerpt(text)!r} is not a duration (e.g. 10s, 5m, 1h); "
                              f"bounds: {bounds}") from None
        if value < low or (high is not None and value > high):
            raise ConfigError(f"{name}={excerpt(text)} is out of bounds: {bounds}")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        text = self.raw(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:  # also past int's 4300-digit conversion limit
            raise ConfigError(f"{name}={excerpt(text)!r} is not an integer ({low} to {high})") \
                from None
        if not low <= value <= high:
            raise ConfigError(f"{name}={excerpt(text)} is out of bounds: {low} to {high}")
        return value

    def size(self, name: str, default: int, low: int, high: int) -> int:
        """A byte count, plain or with a ``KiB``/``MiB``/``GiB`` suffix, within bounds."""
        text = self.raw(name)
        if text is None:
            return default
        bounds = f"{format_size(low)} to {format_size(high)}"
        try:
            value = parse_size(text)
        except ValueError:
            raise ConfigError(f"{name}={excerpt(text)!r} is not a size (bytes, or e.g. 512KiB, "
                              f"8MiB); bounds: {bounds}") from None
        if not low <= value <= high:
            raise ConfigError(f"{name}={excerpt(text)} is out of bounds: {bounds}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        text = self.raw(name)
        if text is None:
            return default
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={excerpt(text)!r} must be true or false")

    def choice(self, name: str, default: str, choices: tuple[str, ...],
               *, upper: bool = False) -> str:
        text = self.raw(name)
        if text is None:
            return default
        value = text.upper() if upper else text.lower()
        if value not in choices:
            raise ConfigError(f"{name}={excerpt(text)!r} must be one of {', '.join(choices)}")
        return value

    def csv(self, name: str) -> tuple[str, ...]:
        text = self.raw(name)
        if text is None:
            return ()
        return tuple(item.strip() for item in text.split(",") if item.strip())

    def json_list(self, name: str) -> tuple[dict[str, Any], ...]:
        text = self.raw(name)
        if text is None:
            return ()
        try:
            value = json.loads(text)
        except RecursionError:
            raise ConfigError(f"{name} is not valid JSON: nested too deeply") from None
        except ValueError as err:  # the decoder's message gives a position, not the value
            raise ConfigError(f"{name} is not valid JSON: {err}") from None
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ConfigError(f"{name} must be a JSON list of objects")
        return tuple(value)


POSTGRES_URL_PREFIXES = ("postgresql://", "postgres://")


def is_postgres_url(database_url: str) -> bool:
    """True for a ``postgresql://`` or ``postgres://`` URL (psycopg 3); else SQLite."""
    return database_url.startswith(POSTGRES_URL_PREFIXES)


def _listen_addr(env: _Env, name: str, default: str) -> tuple[str, int]:
    text = env.raw(name) or default
    host, sep, port = text.rpartition(":")
    # isascii: "²".isdigit() is True, yet int("²") fails; len: int() of 5000 digits fails too.
    if not sep or not (port.isascii() and port.isdigit() and len(port.lstrip("0")) <= 5) or \
            not 0 < int(port) < 65536:
        raise ConfigError(f"{name}={excerpt(text)!r} must be host:port with a port of 1 to 65535")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server reads from its environment (the secret stays out of repr)."""

    agent_token: str = field(repr=False)
    database_url: str = "sqlite:///miniobserv.db"
    listen_addr: tuple[str, int] = ("127.0.0.1", 8080)
    request_timeout: timedelta = timedelta(seconds=10)
    shutdown_timeout: timedelta = timedelta(seconds=10)
    db_pool_min: int = 1
    db_pool_max: int = 10
    auto_migrate: bool = True
    alert_rules: tuple[AlertRule, ...] = ()
    alert_notifications: tuple[Notification, ...] = ()
    alert_interval: timedelta = timedelta(seconds=30)
    host_stale_after: timedelta = timedelta(seconds=20)
    host_down_after: timedelta = timedelta(seconds=50)
    metrics_retention: timedelta = timedelta(days=30)
    # Plain PostgreSQL: samples older than this are packed into 30-minute blocks.
    metrics_pack_after: timedelta = timedelta(hours=2)
    logs_retention: timedelta = timedelta(days=14)
    dashboard_enabled: bool = True
    dashboard_auth: str = "token"
    max_body_bytes: int = 8 * 1024 * 1024
    log_level: str = "INFO"
    metrics_auth: str = "token"
    token_max_ttl: timedelta = DEFAULT_TOKEN_MAX_TTL
    read_secret: str | None = field(default=None, repr=False)
    max_query_points: int = 100_000  # points one metric query may answer, over all series
    max_series_per_host: int = 10_000
    max_hosts: int = 100_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerConfig:
        """Parse the server's settings; raise ConfigError naming the first bad variable."""
        env = _Env(os.environ if environ is None else environ)
        second, hour = timedelta(seconds=1), timedelta(hours=1)
        database_url = env.raw("DATABASE_URL") or cls.database_url
        if not (is_postgres_url(database_url) or database_url.startswith("sqlite:///")):
            raise ConfigError("DATABASE_URL must start with postgresql:// or sqlite:///")
        pool_min = env.integer("DB_POOL_MIN", cls.db_pool_min, 0, 100)
        pool_max = env.integer("DB_POOL_MAX", max(cls.db_pool_max, pool_min), 1, 1000)
        if pool_max < pool_min:
            raise ConfigError(f"DB_POOL_MAX={pool_max} must be at least DB_POOL_MIN={pool_min}")
        stale = env.duration("HOST_STALE_AFTER", cls.host_stale_after, second)
        down = env.duration("HOST_DOWN_AFTER", cls.host_down_after, second)
        if stale >= down:
            raise ConfigError(f"HOST_STALE_AFTER={format_duration(stale)} must be below "
                              f"HOST_DOWN_AFTER={format_duration(down)}")
        return cls(
            agent_token=env.secret("AGENT_TOKEN"),
            database_url=database_url,
            listen_addr=_listen_addr(env, "LISTEN_ADDR", "127.0.0.1:8080"),
            request_timeout=env.duration("REQUEST_TIMEOUT", cls.request_timeout, second,
                                         timedelta(seconds=120)),
            shutdown_timeout=env.duration("SHUTDOWN_TIMEOUT", cls.shutdown_timeout, second,
                                          timedelta(seconds=120)),
            db_pool_min=pool_min,
            db_pool_max=pool_max,
            auto_migrate=env.boolean("AUTO_MIGRATE", cls.auto_migrate),
            alert_rules=_alert_rules(env),
            alert_notifications=_notifications(env),
            alert_interval=env.duration("ALERT_INTERVAL", cls.alert_interval, second,
                                        timedelta(days=1)),
            host_stale_after=stale,
            host_down_after=down,
            metrics_retention=env.duration("METRICS_RETENTION", cls.metrics_retention, hour,
                                           timedelta(days=3650)),
            metrics_pack_after=env.duration("METRICS_PACK_AFTER", cls.metrics_pack_after,
                                            timedelta(minutes=10), timedelta(days=7)),
            logs_retention=env.duration("LOGS_RETENTION", cls.logs_retention, hour,
                                        timedelta(days=3650)),
            dashboard_enabled=env.boolean("DASHBOARD_ENABLED", cls.dashboard_enabled),
            dashboard_auth=env.choice("DASHBOARD_AUTH", cls.dashboard_auth, ("none", "token")),
            max_body_bytes=env.size("MAX_BODY_BYTES", cls.max_body_bytes, 1 << 10, 1 << 30),
            log_level=env.choice("LOG_LEVEL", cls.log_level, LOG_LEVELS, upper=True),
            metrics_auth=env.choice("METRICS_AUTH", cls.metrics_auth, ("none", "token")),
            token_max_ttl=_token_max_ttl(env),
            read_secret=_read_secret(env),
            max_query_points=env.integer("MAX_QUERY_POINTS", cls.max_query_points, 1_000,
                                         10_000_000),
            max_series_per_host=env.integer("MAX_SERIES_PER_HOST", cls.max_series_per_host, 1,
                                            10_000_000),
            max_hosts=env.integer("MAX_HOSTS", cls.max_hosts, 1, 10_000_000),
        )

    @property
    def read_key(self) -> str:
        """The secret read tokens are signed with: ``READ_SECRET`` when set, else AGENT_TOKEN."""
        return self.read_secret or self.agent_token

    @property
    def is_postgres(self) -> bool:
        return is_postgres_url(self.database_url)


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent reads from its environment."""

    server_url: str
    agent_token: str = field(repr=False)
    host: str = field(default_factory=socket.gethostname)
    collect_interval: timedelta = timedelta(seconds=10)
    disk_mounts: tuple[str, ...] = ()
    net_ifaces: tuple[str, ...] = ()
    log_paths: tuple[str, ...] = ()
    log_state_dir: Path = field(
        default_factory=lambda: Path.home() / ".local" / "state" / "miniobserv")
    log_multiline: bool = False  # join indented and stack-trace lines to the entry before
    agent_labels: Mapping[str, str] = field(default_factory=dict)
    request_timeout: timedelta = timedelta(seconds=10)
    shutdown_timeout: timedelta = timedelta(seconds=10)
    log_level: str = "INFO"
    token_max_ttl: timedelta = DEFAULT_TOKEN_MAX_TTL  # the agent mints min(24h, this)
    spool_dir: Path | None = None  # set: batches the full queue cannot take go to disk
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AgentConfig:
        """Parse the agent's settings; raise ConfigError naming the first bad variable."""
        env = _Env(os.environ if environ is None else environ)
        second = timedelta(seconds=1)
        server_url = env.required("SERVER_URL").rstrip("/")
        if not server_url.startswith(("http://", "https://")):
            raise ConfigError("SERVER_URL must start with http:// or https://")
        state_dir = env.raw("LOG_STATE_DIR")
        spool_dir = env.raw("SPOOL_DIR")
        return cls(
            server_url=server_url,
            agent_token=env.secret("AGENT_TOKEN"),
            host=_agent_host(env),
            collect_interval=env.duration("COLLECT_INTERVAL", cls.collect_interval, second,
                                          timedelta(seconds=300)),
            disk_mounts=env.csv("DISK_MOUNTS"),
            net_ifaces=env.csv("NET_IFACES"),
            log_paths=env.csv("LOG_PATHS"),
            log_state_dir=Path(state_dir).expanduser() if state_dir else
            Path.home() / ".local" / "state" / "miniobserv",
            log_multiline=env.boolean("LOG_MULTILINE", cls.log_multiline),
            agent_labels=_agent_labels(env),
            request_timeout=env.duration("REQUEST_TIMEOUT", cls.request_timeout, second,
                                         timedelta(seconds=120)),
            shutdown_timeout=env.duration("SHUTDOWN_TIMEOUT", cls.shutdown_timeout, second,
                                          timedelta(seconds=120)),
            log_level=env.choice("LOG_LEVEL", cls.log_level, LOG_LEVELS, upper=True),
            token_max_ttl=_token_max_ttl(env),
            spool_dir=Path(spool_dir).expanduser() if spool_dir else None,
            spool_max_bytes=env.size("SPOOL_MAX_BYTES", DEFAULT_SPOOL_MAX_BYTES,
                                     *SPOOL_MAX_BYTES_BOUNDS),
        )


def _token_max_ttl(env: _Env) -> timedelta:
    # Read by the server, the agent and the CLI alike, so a short limit set everywhere
    # also shortens the agent's own tokens instead of getting them refused.
    return env.duration("TOKEN_MAX_TTL", DEFAULT_TOKEN_MAX_TTL, *TOKEN_MAX_TTL_BOUNDS)


def _read_secret(env: _Env) -> str | None:
    if env.raw("READ_SECRET") is None:
        return None
    secret = env.secret("READ_SECRET")
    if secret == env.raw("AGENT_TOKEN"):
        raise ConfigError("READ_SECRET must differ from AGENT_TOKEN")
    return secret


def _alert_rules(env: _Env) -> tuple[AlertRule, ...]:
    from miniobserv.rules import parse_alert_rules  # rules.py imports this module

    return parse_alert_rules(env.json_list("ALERT_RULES"))


def _notifications(env: _Env) -> tuple[Notification, ...]:
    from miniobserv.rules import parse_notifications

    return parse_notifications(env.json_list("ALERT_NOTIFICATIONS"))


def _agent_host(env: _Env) -> str:
    # Checked here: a host the server refuses would make every batch a permanent 400.
    try:
        return check_host(env.raw("AGENT_HOST") or socket.gethostname(), "AGENT_HOST")
    except ValidationError as err:
        raise ConfigError(str(err)) from None


def _agent_labels(env: _Env) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in env.csv("AGENT_LABELS"):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"AGENT_LABELS item {excerpt(item)!r} must be key=value")
        labels[key.strip()] = value.strip()
    try:
        return check_labels(labels, "AGENT_LABELS")
    except ValidationError as err:
        raise ConfigError(str(err)) from None
