"""The ``miniobserv`` command: serve, migrate, token, query and demo (SPEC §1).

An entry point: it reads the environment, configures logging and may import both the server
and the agent. Configuration errors print one line naming the variable and exit 2.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

import click
import requests
from jwt.warnings import InsecureKeyLengthWarning
from werkzeug.wsgi import ClosingIterator

from miniobserv.config import ServerConfig
from miniobserv.errors import ConfigError
from miniobserv.tokens import SCOPES, mint_token
from miniobserv.units import DurationTooLong, excerpt, format_duration, parse_duration

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

DEFAULT_SERVER_URL = "http://127.0.0.1:8080"
SPARK_CHARS = "▁▂▃▄▅▆▇█"


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"miniobserv: {message}", err=True)
    sys.exit(code)


MIN_TTL = timedelta(seconds=1)  # JWT times are whole seconds: a shorter TTL makes exp == iat
QUERY_TOKEN_TTL = timedelta(minutes=5)  # the read token ``query`` mints for its one request


class Duration(click.ParamType):
    """A click option holding a duration such as ``30s``, ``15m``, ``1h`` or ``7d``.

    Bad text, a duration below ``minimum`` or one too long for any date is a usage error
    (exit 2) naming the option.
    """

    name = "duration"

    def __init__(self, minimum: timedelta) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            result = parse_duration(str(value))
        except DurationTooLong:
            self.fail(f"{excerpt(value)!r} is too long", param, ctx)
        except ValueError:
            self.fail(f"{excerpt(value)!r} is not a duration (e.g. 30s, 15m, 1h, 7d)", param, ctx)
        if result < self.minimum or result <= timedelta(0):
            self.fail(f"{excerpt(value)!r} is below the minimum of "
                      f"{format_duration(self.minimum)}", param, ctx)
        return result


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Alembic lists every plugin it loads at INFO; the migrations it runs stay visible.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


TOKEN_VARIABLES = ("AGENT_TOKEN", "READ_SECRET", "TOKEN_MAX_TTL")


def _token_settings() -> ServerConfig:
    """AGENT_TOKEN, READ_SECRET and TOKEN_MAX_TTL, checked the same way the server checks them."""
    try:
        return ServerConfig.from_env({name: os.environ.get(name, "") for name in TOKEN_VARIABLES})
    except ConfigError as err:
        _fail(str(err))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="miniobserv")
def cli() -> None:
    """MiniObserv: self-hosted metrics and logs for fleets of Linux hosts."""


@cli.command()
def serve() -> None:
    """Run the server for development (LISTEN_ADDR, default 127.0.0.1:8080).

    Production runs gunicorn 'miniobserv.server.wsgi:app' instead.
    """
    from werkzeug.serving import make_server

    from miniobserv.server.app import create_app, stop_background
    from miniobserv.server.exposure import warn_if_exposed

    try:
        config = ServerConfig.from_env(os.environ)
    except ConfigError as err:
        _fail(str(err))
    _configure_logging(config.log_level)
    app = create_app(config, start_background=True)
    warn_if_exposed(config, [config.listen_addr[0]])
    requests_in_flight = InFlight(app)
    host, port = config.listen_addr
    try:
        server = make_server(host, port, requests_in_flight, threaded=True)
    except OSError as err:
        _fail(f"cannot listen on {host}:{port}: {err.strerror or err}", 1)
    _serve_until_signal(server.serve_forever, server.shutdown,
                        lambda: click.echo(serve_banner(config)))
    # SHUTDOWN_TIMEOUT bounds the rest: requests being served, then the alerting threads.
    deadline = time.monotonic() + config.shutdown_timeout.total_seconds()
    server.server_close()  # no new connections
    if not requests_in_flight.wait_idle(config.shutdown_timeout.total_seconds()):
        log.warning("%d requests still running after SHUTDOWN_TIMEOUT; stopping anyway",
                    requests_in_flight.count)
    stop_background(app, max(0.0, deadline - time.monotonic()))
    click.echo("MiniObserv stopped")


def serve_banner(config: ServerConfig) -> str:
    """Where ``serve`` listens and, with the dashboard, a link carrying a read token."""
    from miniobserv.server.exposure import connect_host, dashboard_link, dashboard_token

    host, port = config.listen_addr
    lines = [f"MiniObserv listening on http://{host}:{port} "
             f"(database: {_describe_database(config.database_url)})"]
    if config.dashboard_enabled:
        base = f"http://{connect_host(host)}:{port}"
        lines.append(f"Dashboard: {dashboard_link(base, dashboard_token(config))}")
    return "\n".join(lines)


class InFlight:
    """WSGI middleware counting the requests being served, so shutdown can wait for them."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app
        self.count = 0
        self._idle = threading.Condition()

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        with self._idle:
            self.count += 1
        try:
            body = self.app(environ, start_response)
        except BaseException:
            self._done()
            raise
        return ClosingIterator(body, self._done)  # done once the server closed the body

    def _done(self) -> None:
        with self._idle:
            self.count -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once no request is being served; False when ``timeout`` (s) passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self.count == 0, timeout)


def _describe_database(url: str) -> str:
    """The database URL without its password, for printing."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    credentials, _, location = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{location}" if user else f"{scheme}://{location}"


def _serve_until_signal(run: Callable[[], None], stop: Callable[[], None],
                        ready: Callable[[], None] = lambda: None) -> None:
    """Run ``run`` until SIGINT or SIGTERM, then call ``stop`` from another thread.

    ``ready`` runs once the handlers are in place (a SIGTERM after it stops cleanly).
    """

    def handle(signum: int, frame: Any) -> None:
        threading.Thread(target=stop, daemon=True).start()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        ready()
        run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@cli.command()
@click.option("--revision", default="head", show_default=True, help="Alembic revision.")
def migrate(revision: str) -> None:
    """Bring the database of DATABASE_URL to the newest schema (alembic upgrade)."""
    from miniobserv.server.storage.migrate import upgrade

    url = os.environ.get("DATABASE_URL", "").strip() or ServerConfig.database_url
    _configure_logging(os.environ.get("LOG_LEVEL", "INFO").upper())
    try:
        upgrade(url, revision)
    except Exception as err:  # noqa: BLE001 - one clear line beats a traceback here
        _fail(f"migration failed: {err}", 1)
    click.echo(f"database at {_describe_database(url)} is at revision {revision}")


@cli.command()
@click.option("--ttl", type=Duration(MIN_TTL), default="24h", show_default=True,
              help="Lifetime, e.g. 1h, 24h, 30d (at least 1s, at most TOKEN_MAX_TTL).")
@click.option("--scope", type=click.Choice(SCOPES), default=None,
              help="Narrow the token to ingest (POST) or read (queries).")
def token(ttl: timedelta, scope: str | None) -> None:
    """Print an HS256 JWT minted from AGENT_TOKEN (read tokens: READ_SECRET when set)."""
    settings = _token_settings()
    if ttl > settings.token_max_ttl:
        _fail(f"--ttl {format_duration(ttl)} is above TOKEN_MAX_TTL="
              f"{format_duration(settings.token_max_ttl)}")
    if settings.read_secret is not None and scope is None:
        # An unscoped token signed with either secret would silently grant only one scope.
        _fail("READ_SECRET is set: choose --scope ingest or --scope read")
    secret = settings.read_key if scope == "read" else settings.agent_token
    click.echo(mint_token(secret, ttl, scope=scope, issuer="miniobserv"))


@cli.command()
@click.option("--host", "host", required=True, help="Host whose series to show.")
@click.option("--name", required=True, help="Metric name, e.g. cpu.usage_pct.")
@click.option("--since", type=Duration(timedelta(milliseconds=1)), default="1h",
              show_default=True, help="Window ending now.")
@click.option("--bucket", default="1m", show_default=True)
@click.option("--agg", default="avg", show_default=True)
@click.option("--label", "labels", multiple=True, help="key:value filter, repeatable.")
@click.option("--plot", is_flag=True, help="Draw a sparkline instead of a table.")
@click.option("--server", default=None,
              help=f"Server URL (default: SERVER_URL or {DEFAULT_SERVER_URL}).")
def query(host: str, name: str, since: timedelta, bucket: str, agg: str, labels: Sequence[str],
          plot: bool, server: str | None) -> None:
    """Show one series from the server as a table or a sparkline."""
    base = (server or os.environ.get("SERVER_URL") or DEFAULT_SERVER_URL).rstrip("/")
    end = datetime.now(UTC).replace(microsecond=0)
    try:
        start = end - since
    except OverflowError:
        raise click.BadParameter("reaches before the year 1", param_hint="'--since'") from None
    params: list[tuple[str, str]] = [
        ("host", host), ("name", name), ("from", start.isoformat()), ("to", end.isoformat()),
        ("bucket", bucket), ("agg", agg)] + [("label", label) for label in labels]
    settings = _token_settings()
    bearer = mint_token(settings.read_key, min(QUERY_TOKEN_TTL, settings.token_max_ttl),
                        scope="read", issuer="miniobserv")
    body = _get_json(f"{base}/api/v1/metrics/query", params, bearer)
    points = body.get("points", [])
    if not points:
        click.echo(f"no points for {name} on {host} in the last {format_duration(since)}")
        return
    click.echo(render_sparkline(points) if plot else render_table(points))


def _get_json(url: str, params: list[tuple[str, str]], bearer: str) -> dict[str, Any]:
    try:
        response = requests.get(url, params=params, timeout=30,
                                headers={"Authorization": f"Bearer {bearer}"})
    except requests.RequestException as err:
        _fail(f"cannot reach the server at {url.split('/api/')[0]}: {type(err).__name__}", 1)
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code == 401:
        _fail("the server refused the token (401): AGENT_TOKEN (and READ_SECRET, when the "
              "server has one) must be the server's", 1)
    if response.status_code != 200:
        _fail(f"the server answered {response.status_code}: "
              f"{body.get('error', response.reason) if isinstance(body, dict) else ''}", 1)
    return body if isinstance(body, dict) else {}


def render_table(points: Sequence[dict[str, Any]]) -> str:
    """Two aligned columns, time and value."""
    lines = [f"{'time':<20}  value"]
    lines += [f"{p['time']:<20}  {p['value']:.6g}" for p in points]
    return "\n".join(lines)


def render_sparkline(points: Sequence[dict[str, Any]]) -> str:
    """One line of block characters scaled between the series' min and max."""
    values = [float(p["value"]) for p in points]
    low, high = min(values), max(values)
    span = high - low
    top = len(SPARK_CHARS) - 1
    spark = "".join(SPARK_CHARS[0 if span == 0 else round((v - low) / span * top)]
                    for v in values)
    return (f"{spark}\nmin {low:.6g}  max {high:.6g}  last {values[-1]:.6g}  "
            f"({points[0]['time']} .. {points[-1]['time']})")


@cli.command()
def demo() -> None:
    """Run the server on SQLite and an agent for this host in one process."""
    from miniobserv.demo import main as demo_main

    sys.exit(demo_main())


def main() -> None:
    # SPEC §4 allows secrets from 16 characters; PyJWT would warn below 32 on every token.
    warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)
    cli(prog_name="miniobserv")


if __name__ == "__main__":
    main()
