"""Configuration from the environment (SPEC §5): required, optional, bounds, messages."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from miniobserv.config import (
    AgentConfig,
    DurationTooLong,
    ServerConfig,
    excerpt,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)
from miniobserv.errors import ConfigError

SECRET = "0123456789abcdef"  # the 16-character minimum
SERVER = {"AGENT_TOKEN": SECRET}
AGENT = {"SERVER_URL": "http://observ.example:8080", "AGENT_TOKEN": SECRET}


def server(**env: str) -> ServerConfig:
    return ServerConfig.from_env({**SERVER, **env})


def agent(**env: str) -> AgentConfig:
    return AgentConfig.from_env({**AGENT, **env})


def refused(build: Any, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        build(**env)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("10s", 10), ("5m", 300), ("1h", 3600), ("30d", 2592000), ("250ms", 0.25),
    ("1h30m", 5400), ("1.5s", 1.5), (" 2m ", 120), ("0s", 0), ("1d1h1m1s", 90061),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10", "s", "10x", "-5s", "1h 30m", "5 m", "1e3s",
                                  "５s", "10S", "1.s", ".5s", "1h-1m"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0, 0.5, 1, 59, 60, 61, 3600, 5400, 86400, 90061])
def test_format_duration_round_trips(seconds: float) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


SERVER_DURATIONS = [
    # variable, attribute, default, lowest accepted, highest accepted (None: unbounded)
    ("REQUEST_TIMEOUT", "request_timeout", "10s", "1s", "120s"),
    ("SHUTDOWN_TIMEOUT", "shutdown_timeout", "10s", "1s", "120s"),
    ("ALERT_INTERVAL", "alert_interval", "30s", "1s", "1d"),
    ("METRICS_RETENTION", "metrics_retention", "30d", "1h", "3650d"),
    ("METRICS_PACK_AFTER", "metrics_pack_after", "2h", "10m", "7d"),
    ("LOGS_RETENTION", "logs_retention", "14d", "1h", "3650d"),
]


def _just_below(text: str) -> str:
    return format_duration(parse_duration(text) - timedelta(milliseconds=1))


def _just_above(text: str) -> str:
    return format_duration(parse_duration(text) + timedelta(milliseconds=1))


@pytest.mark.parametrize(("variable", "attribute", "default", "low", "high"), SERVER_DURATIONS)
def test_server_duration_bounds(variable: str, attribute: str, default: str, low: str,
                                high: str) -> None:
    assert getattr(server(), attribute) == parse_duration(default)
    assert getattr(server(**{variable: ""}), attribute) == parse_duration(default)
    assert getattr(server(**{variable: low}), attribute) == parse_duration(low)
    assert getattr(server(**{variable: high}), attribute) == parse_duration(high)
    bounds = f"{format_duration(parse_duration(low))} to {format_duration(parse_duration(high))}"
    for bad in (_just_below(low), _just_above(high)):
        message = refused(server, **{variable: bad})
        assert message.startswith(f"{variable}={bad} is out of bounds") and bounds in message
    message = refused(server, **{variable: "soon"})
    assert message.startswith(f"{variable}='soon' is not a duration") and bounds in message


@pytest.mark.parametrize("variable", ["HOST_STALE_AFTER", "HOST_DOWN_AFTER"])
def test_host_thresholds_are_at_least_one_second(variable: str) -> None:
    message = refused(server, **{variable: "999ms"})
    assert message.startswith(f"{variable}=999ms is out of bounds: at least 1s")


def test_host_thresholds_defaults_and_order() -> None:
    config = server()
    assert (config.host_stale_after, config.host_down_after) == (timedelta(seconds=20),
                                                                 timedelta(seconds=50))
    assert server(HOST_STALE_AFTER="1s", HOST_DOWN_AFTER="2s").host_down_after == \
        timedelta(seconds=2)
    message = refused(server, HOST_STALE_AFTER="50s")
    assert message == "HOST_STALE_AFTER=50s must be below HOST_DOWN_AFTER=50s"
    assert "HOST_STALE_AFTER" in refused(server, HOST_STALE_AFTER="1m", HOST_DOWN_AFTER="30s")


AGENT_DURATIONS = [
    ("COLLECT_INTERVAL", "collect_interval", "10s", "1s", "300s"),
    ("REQUEST_TIMEOUT", "request_timeout", "10s", "1s", "120s"),
    ("SHUTDOWN_TIMEOUT", "shutdown_timeout", "10s", "1s", "120s"),
]


@pytest.mark.parametrize(("variable", "attribute", "default", "low", "high"), AGENT_DURATIONS)
def test_agent_duration_bounds(variable: str, attribute: str, default: str, low: str,
                               high: str) -> None:
    assert getattr(agent(), attribute) == parse_duration(default)
    assert getattr(agent(**{variable: low}), attribute) == parse_duration(low)
    assert getattr(agent(**{variable: high}), attribute) == parse_duration(high)
    for bad in (_just_below(low), _just_above(high), "10"):
        assert refused(agent, **{variable: bad}).startswith(f"{variable}=")


# --- server ----------------------------------------------------------------------------------


def test_server_defaults() -> None:
    config = server()
    assert config.agent_token == SECRET
    assert config.database_url == "sqlite:///miniobserv.db" and not config.is_postgres
    assert config.listen_addr == ("127.0.0.1", 8080)
    assert (config.db_pool_min, config.db_pool_max) == (1, 10)
    assert config.auto_migrate is True
    assert config.alert_rules == () and config.alert_notifications == ()
    assert config.dashboard_enabled is True and config.dashboard_auth == "token"
    assert config.metrics_auth == "token" and config.token_max_ttl == timedelta(days=30)
    assert config.read_secret is None and config.read_key == SECRET
    assert config.max_body_bytes == 8 * 1024 * 1024
    assert config.log_level == "INFO"


@pytest.mark.parametrize("value", [None, "", "   "])
def test_agent_token_is_required(value: str | None) -> None:
    env = {} if value is None else {"AGENT_TOKEN": value}
    with pytest.raises(ConfigError, match="^AGENT_TOKEN is required$"):
        ServerConfig.from_env(env)
    with pytest.raises(ConfigError, match="^AGENT_TOKEN is required$"):
        AgentConfig.from_env({"SERVER_URL": "http://x", **env})


def test_agent_token_length_edge() -> None:
    assert server(AGENT_TOKEN="x" * 16).agent_token == "x" * 16
    assert refused(server, AGENT_TOKEN="x" * 15) == "AGENT_TOKEN must be at least 16 characters"
    assert refused(agent, AGENT_TOKEN="x" * 15) == "AGENT_TOKEN must be at least 16 characters"


def test_secret_stays_out_of_repr() -> None:
    assert SECRET not in repr(server()) and SECRET not in repr(agent())


@pytest.mark.parametrize("url", ["postgresql://u:p@db/x", "postgres://db/x",
                                 "sqlite:////tmp/x.db", "sqlite:///x.db"])
def test_database_urls(url: str) -> None:
    config = server(DATABASE_URL=url)
    assert config.database_url == url
    assert config.is_postgres == url.startswith("postgres")


@pytest.mark.parametrize("url", ["mysql://db/x", "sqlite://x.db", "db.sqlite", "http://x"])
def test_other_database_urls_are_refused(url: str) -> None:
    assert refused(server, DATABASE_URL=url).startswith("DATABASE_URL must start with")


@pytest.mark.parametrize(("text", "expected"), [
    ("0.0.0.0:80", ("0.0.0.0", 80)), ("[::1]:8080", ("::1", 8080)), (":9000", ("0.0.0.0", 9000)),
    ("localhost:65535", ("localhost", 65535)), ("h:1", ("h", 1)),
])
def test_listen_addr(text: str, expected: tuple[str, int]) -> None:
    assert server(LISTEN_ADDR=text).listen_addr == expected


@pytest.mark.parametrize("text", ["8080", "host:", "host:0", "host:65536", "host:http",
                                  "host:-1"])
def test_bad_listen_addr(text: str) -> None:
    assert refused(server, LISTEN_ADDR=text).startswith("LISTEN_ADDR=")


def test_pool_bounds() -> None:
    assert server(DB_POOL_MIN="0").db_pool_min == 0
    assert server(DB_POOL_MIN="100", DB_POOL_MAX="1000").db_pool_max == 1000
    assert server(DB_POOL_MIN="20").db_pool_max == 20  # default max follows a larger min
    assert refused(server, DB_POOL_MIN="-1") == "DB_POOL_MIN=-1 is out of bounds: 0 to 100"
    assert refused(server, DB_POOL_MIN="101") == "DB_POOL_MIN=101 is out of bounds: 0 to 100"
    assert refused(server, DB_POOL_MAX="0") == "DB_POOL_MAX=0 is out of bounds: 1 to 1000"
    assert refused(server, DB_POOL_MAX="1001").startswith("DB_POOL_MAX=1001 is out of bounds")
    assert refused(server, DB_POOL_MAX="ten") == "DB_POOL_MAX='ten' is not an integer (1 to 1000)"
    assert refused(server, DB_POOL_MIN="5", DB_POOL_MAX="4") == \
        "DB_POOL_MAX=4 must be at least DB_POOL_MIN=5"


def test_max_body_bytes_bounds() -> None:
    assert server(MAX_BODY_BYTES="1024").max_body_bytes == 1024
    assert server(MAX_BODY_BYTES=str(1 << 30)).max_body_bytes == 1 << 30
    assert refused(server, MAX_BODY_BYTES="1023") == \
        "MAX_BODY_BYTES=1023 is out of bounds: 1KiB to 1GiB"
    assert refused(server, MAX_BODY_BYTES=str((1 << 30) + 1)).startswith("MAX_BODY_BYTES=")


@pytest.mark.parametrize(("text", "size"), [
    ("1KiB", 1024), ("1kib", 1024), ("8MiB", 8 << 20), ("8 MiB", 8 << 20), ("1GiB", 1 << 30),
    ("1048576KiB", 1 << 30), ("1536KiB", 1536 << 10), ("0008MiB", 8 << 20),
])
def test_max_body_bytes_takes_binary_suffixes(text: str, size: int) -> None:
    assert server(MAX_BODY_BYTES=text).max_body_bytes == size


@pytest.mark.parametrize(("text", "message"), [
    ("1023", "MAX_BODY_BYTES=1023 is out of bounds: 1KiB to 1GiB"),
    ("1048577KiB", "MAX_BODY_BYTES=1048577KiB is out of bounds: 1KiB to 1GiB"),
    ("2GiB", "MAX_BODY_BYTES=2GiB is out of bounds: 1KiB to 1GiB"),
    ("0KiB", "MAX_BODY_BYTES=0KiB is out of bounds: 1KiB to 1GiB"),
    ("8MB", "MAX_BODY_BYTES='8MB' is not a size (bytes, or e.g. 512KiB, 8MiB); bounds: "
            "1KiB to 1GiB"),
    ("1.5MiB", "MAX_BODY_BYTES='1.5MiB' is not a size"),
    ("-1", "MAX_BODY_BYTES='-1' is not a size"),
    ("8  MiB", "MAX_BODY_BYTES='8  MiB' is not a size"),
    ("9" * 5000, f"MAX_BODY_BYTES={'9' * 40}… is out of bounds: 1KiB to 1GiB"),
])
def test_max_body_bytes_refusals(text: str, message: str) -> None:
    assert refused(server, MAX_BODY_BYTES=text).startswith(message)


@pytest.mark.parametrize("size", [1, 1023, 1024, 1536 << 10, 8 << 20, 1 << 30, 3 << 30])
def test_format_size_round_trips(size: int) -> None:
    assert parse_size(format_size(size)) == size


@pytest.mark.parametrize("variable", ["AUTO_MIGRATE", "DASHBOARD_ENABLED"])
def test_booleans(variable: str) -> None:
    attribute = variable.lower()
    for text in ("1", "true", "YES", "On"):
        assert getattr(server(**{variable: text}), attribute) is True
    for text in ("0", "false", "No", "OFF"):
        assert getattr(server(**{variable: text}), attribute) is False
    assert refused(server, **{variable: "maybe"}) == f"{variable}='maybe' must be true or false"


def test_dashboard_auth_choices() -> None:
    assert server(DASHBOARD_AUTH="token").dashboard_auth == "token"
    assert server(DASHBOARD_AUTH="NONE").dashboard_auth == "none"
    assert refused(server, DASHBOARD_AUTH="basic") == \
        "DASHBOARD_AUTH='basic' must be one of none, token"


def test_metrics_auth_choices() -> None:
    assert server(METRICS_AUTH="None").metrics_auth == "none"
    assert refused(server, METRICS_AUTH="open") == \
        "METRICS_AUTH='open' must be one of none, token"


@pytest.mark.parametrize("build", [server, agent])
def test_token_max_ttl_bounds(build: Any) -> None:
    assert build().token_max_ttl == timedelta(days=30)
    assert build(TOKEN_MAX_TTL="1m").token_max_ttl == timedelta(minutes=1)
    assert build(TOKEN_MAX_TTL="3650d").token_max_ttl == timedelta(days=3650)
    for bad in ("59s", "3650d1s"):
        assert refused(build, TOKEN_MAX_TTL=bad) == \
            f"TOKEN_MAX_TTL={bad} is out of bounds: 1m to 3650d"
    assert refused(build, TOKEN_MAX_TTL="forever").startswith("TOKEN_MAX_TTL='forever' is not")


def test_read_secret_is_checked_and_kept_out_of_repr() -> None:
    config = server(READ_SECRET="r" * 16)
    assert config.read_secret == config.read_key == "r" * 16
    assert "r" * 16 not in repr(config)
    assert server(READ_SECRET="  ").read_secret is None
    assert refused(server, READ_SECRET="r" * 15) == "READ_SECRET must be at least 16 characters"
    assert refused(server, READ_SECRET=SECRET) == "READ_SECRET must differ from AGENT_TOKEN"


def test_log_level_choices() -> None:
    assert server(LOG_LEVEL="debug").log_level == "DEBUG"
    assert agent(LOG_LEVEL="warning").log_level == "WARNING"
    assert refused(server, LOG_LEVEL="verbose").startswith("LOG_LEVEL='verbose' must be one of")
    assert refused(agent, LOG_LEVEL="warn").startswith("LOG_LEVEL='warn' must be one of")


@pytest.mark.parametrize("variable", ["ALERT_RULES", "ALERT_NOTIFICATIONS"])
def test_json_lists(variable: str) -> None:
    assert getattr(server(**{variable: "[]"}), variable.lower()) == ()
    assert refused(server, **{variable: "[{"}).startswith(f"{variable} is not valid JSON")
    assert refused(server, **{variable: '{"a": 1}'}) == f"{variable} must be a JSON list of objects"
    assert refused(server, **{variable: "[1]"}) == f"{variable} must be a JSON list of objects"


# --- agent -----------------------------------------------------------------------------------


def test_agent_defaults() -> None:
    config = agent()
    assert config.server_url == "http://observ.example:8080"
    assert config.host == socket.gethostname()
    assert config.disk_mounts == () and config.net_ifaces == () and config.log_paths == ()
    assert config.log_state_dir == Path.home() / ".local" / "state" / "miniobserv"
    assert config.agent_labels == {}


def test_server_url_is_required_and_http() -> None:
    with pytest.raises(ConfigError, match="^SERVER_URL is required$"):
        AgentConfig.from_env({"AGENT_TOKEN": SECRET})
    assert refused(agent, SERVER_URL="observ:8080") == \
        "SERVER_URL must start with http:// or https://"
    assert agent(SERVER_URL="https://observ/").server_url == "https://observ"


def test_agent_host_edges() -> None:
    assert agent(AGENT_HOST=" web-01 ").host == "web-01"
    assert agent(AGENT_HOST="h" * 253).host == "h" * 253
    assert refused(agent, AGENT_HOST="h" * 254) == "AGENT_HOST: must be at most 253 characters"


def test_comma_lists() -> None:
    config = agent(DISK_MOUNTS="/, /data ,,", NET_IFACES="eth0", LOG_PATHS="/var/log/*.log,a")
    assert config.disk_mounts == ("/", "/data")
    assert config.net_ifaces == ("eth0",)
    assert config.log_paths == ("/var/log/*.log", "a")


def test_log_state_dir_expands_home() -> None:
    assert agent(LOG_STATE_DIR="~/state").log_state_dir == Path.home() / "state"


def test_agent_labels() -> None:
    assert agent(AGENT_LABELS="env=prod, team = core").agent_labels == {"env": "prod",
                                                                       "team": "core"}
    assert refused(agent, AGENT_LABELS="env") == "AGENT_LABELS item 'env' must be key=value"
    assert refused(agent, AGENT_LABELS="1env=prod").startswith("AGENT_LABELS.1env: label key")
    assert refused(agent, AGENT_LABELS="env=").startswith("AGENT_LABELS.env: must not be empty")
    many = ",".join(f"k{i}=v" for i in range(17))
    assert refused(agent, AGENT_LABELS=many) == "AGENT_LABELS: must have at most 16 labels"
    sixteen = ",".join(f"k{i}=v" for i in range(16))
    assert len(agent(AGENT_LABELS=sixteen).agent_labels) == 16


# --- values far out of range: one short line naming the variable and its bounds ------------

HUGE_DAYS = "99999999999999999999d"  # past what timedelta holds
INFINITE = "1" + "0" * 400 + "s"  # float() of it is inf


@pytest.mark.parametrize("text", [HUGE_DAYS, INFINITE, "1000000000d"])
def test_parse_duration_too_long_for_timedelta(text: str) -> None:
    with pytest.raises(DurationTooLong, match="^duration too long: '"):
        parse_duration(text)
    assert issubclass(DurationTooLong, ValueError)


def test_parse_duration_at_timedelta_edge() -> None:
    assert parse_duration("999999999d") == timedelta(days=999999999)


def _bounds(low: str, high: str) -> str:
    return f"{format_duration(parse_duration(low))} to {format_duration(parse_duration(high))}"


@pytest.mark.parametrize("text", [HUGE_DAYS, INFINITE])
@pytest.mark.parametrize(("build", "variable", "low", "high"),
                         [(server, row[0], *row[3:]) for row in SERVER_DURATIONS] +
                         [(agent, row[0], *row[3:]) for row in AGENT_DURATIONS])
def test_durations_far_over_any_bound(text: str, build: Any, variable: str, low: str,
                                      high: str) -> None:
    message = refused(build, **{variable: text})
    assert message == f"{variable}={excerpt(text)} is out of bounds: {_bounds(low, high)}"


@pytest.mark.parametrize("variable", ["HOST_STALE_AFTER", "HOST_DOWN_AFTER"])
def test_host_thresholds_far_over_any_bound(variable: str) -> None:
    assert refused(server, **{variable: HUGE_DAYS}) == \
        f"{variable}={HUGE_DAYS} is out of bounds: at least 1s"


def test_excerpt_cuts_past_its_limit() -> None:
    assert excerpt("x" * 40) == "x" * 40
    assert excerpt("x" * 41) == "x" * 40 + "…"
    assert excerpt(12345, 3) == "123…"


LONG = "9" * 5000  # past int()'s 4300-digit limit
LONGISH = "9" * 4000  # an integer int() reads, far out of bounds


@pytest.mark.parametrize(("build", "variable", "value", "start"), [
    (server, "DB_POOL_MIN", LONG, "DB_POOL_MIN='" + "9" * 40 + "…' is not an integer (0 to 100)"),
    (server, "DB_POOL_MIN", LONGISH, "DB_POOL_MIN=" + "9" * 40 + "… is out of bounds: 0 to 100"),
    (server, "DB_POOL_MAX", LONGISH, "DB_POOL_MAX=" + "9" * 40 + "… is out of bounds: 1 to 1000"),
    (server, "AUTO_MIGRATE", "y" * 500, "AUTO_MIGRATE='" + "y" * 40 + "…' must be true or false"),
    (server, "LOG_LEVEL", "v" * 500, "LOG_LEVEL='" + "v" * 40 + "…' must be one of"),
    (server, "LISTEN_ADDR", "h:" + LONG, "LISTEN_ADDR='h:" + "9" * 38 + "…' must be host:port"),
    (server, "ALERT_INTERVAL", "x" * 500, "ALERT_INTERVAL='" + "x" * 40 + "…' is not a duration"),
    (agent, "COLLECT_INTERVAL", LONG + "s", "COLLECT_INTERVAL=" + "9" * 40 + "… is out of bounds"),
    (agent, "AGENT_LABELS", "e" * 500, "AGENT_LABELS item '" + "e" * 40 + "…' must be key=value"),
])
def test_long_bad_values_are_cut_in_messages(build: Any, variable: str, value: str,
                                             start: str) -> None:
    message = refused(build, **{variable: value})
    assert message.startswith(start)
    assert len(message) < 200


@pytest.mark.parametrize("text", ["h:²", "h:٣", "h:123456", "h:" + LONG])
def test_listen_addr_odd_digits(text: str) -> None:
    assert "port of 1 to 65535" in refused(server, LISTEN_ADDR=text)


def test_listen_addr_leading_zeros() -> None:
    assert server(LISTEN_ADDR="h:0008080").listen_addr == ("h", 8080)


@pytest.mark.parametrize("variable", ["ALERT_RULES", "ALERT_NOTIFICATIONS"])
def test_json_nested_too_deeply(variable: str) -> None:
    deep = "[" * 5000 + "]" * 5000
    assert refused(server, **{variable: deep}) == f"{variable} is not valid JSON: nested too deeply"
    digits = "[" + "9" * 5000 + "]"  # past int()'s digit limit: the decoder's ValueError
    assert refused(server, **{variable: digits}).startswith(f"{variable} is not valid JSON: ")


def test_max_query_points_default_and_bounds() -> None:
    assert server().max_query_points == 100_000
    assert server(MAX_QUERY_POINTS="1000").max_query_points == 1000
    assert server(MAX_QUERY_POINTS="10000000").max_query_points == 10_000_000
    assert refused(server, MAX_QUERY_POINTS="999") == \
        "MAX_QUERY_POINTS=999 is out of bounds: 1000 to 10000000"
    assert refused(server, MAX_QUERY_POINTS="10000001").startswith("MAX_QUERY_POINTS=")
    assert refused(server, MAX_QUERY_POINTS="many") == \
        "MAX_QUERY_POINTS='many' is not an integer (1000 to 10000000)"


@pytest.mark.parametrize(("variable", "attribute", "default"),
                         [("MAX_SERIES_PER_HOST", "max_series_per_host", 10_000),
                          ("MAX_HOSTS", "max_hosts", 100_000)])
def test_cardinality_limits_and_their_bounds(variable: str, attribute: str,
                                             default: int) -> None:
    assert getattr(server(), attribute) == default
    assert getattr(server(**{variable: "1"}), attribute) == 1
    assert getattr(server(**{variable: "10000000"}), attribute) == 10_000_000
    for bad in ("0", "10000001"):
        assert refused(server, **{variable: bad}) == \
            f"{variable}={bad} is out of bounds: 1 to 10000000"
    assert refused(server, **{variable: "many"}).startswith(f"{variable}='many' is not an integer")


def test_spool_is_off_by_default_and_bounded_to_256mib() -> None:
    config = agent()
    assert config.spool_dir is None
    assert config.spool_max_bytes == 256 * 1024 * 1024


def test_spool_dir_expands_home_and_max_bytes_reads_sizes() -> None:
    config = agent(SPOOL_DIR="~/spool", SPOOL_MAX_BYTES="8MiB")
    assert config.spool_dir == Path.home() / "spool"
    assert config.spool_max_bytes == 8 << 20


@pytest.mark.parametrize("text,ok", [
    ("1MiB", True), ("1048575", False), ("64GiB", True), (str((64 << 30) + 1), False),
    ("lots", False),
])
def test_spool_max_bytes_bounds_are_1mib_to_64gib(text, ok) -> None:
    if ok:
        assert agent(SPOOL_MAX_BYTES=text).spool_max_bytes == parse_size(text)
    else:
        with pytest.raises(ConfigError, match="SPOOL_MAX_BYTES.*1MiB to 64GiB"):
            agent(SPOOL_MAX_BYTES=text)
