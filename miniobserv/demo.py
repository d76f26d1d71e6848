"""``miniobserv demo``: the server on the embedded SQLite default plus an agent for this host.

Both run in this one process (the server in a werkzeug thread, the agent's two threads
beside it). Without ``AGENT_TOKEN`` a random secret is generated and never printed; what is
printed is the dashboard URL carrying a read-only token in its fragment (``/#token=…``), the
token itself and a curl line showing this host's CPU.
Ctrl-C (or SIGTERM) stops the agent (with its drain), then the server; exit status 0.
An entry point, so it may import both the server and the agent.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from miniobserv.agent.runner import Runner
from miniobserv.agent.signals import StopSignals, run_interruptibly
from miniobserv.config import AgentConfig, ServerConfig
from miniobserv.errors import ConfigError
from miniobserv.model import format_time
from miniobserv.server.exposure import (
    connect_host,
    dashboard_link,
    dashboard_token,
    token_expiry,
    warn_if_exposed,
)

log = logging.getLogger("miniobserv.demo")


def demo_configs(environ: Mapping[str, str]) -> tuple[ServerConfig, AgentConfig]:
    """The server's and the agent's settings from one environment.

    A missing ``AGENT_TOKEN`` becomes a random secret; the agent's ``SERVER_URL`` is the
    server's own address. Raises ConfigError naming the first bad variable.
    """
    env = dict(environ)
    if not env.get("AGENT_TOKEN", "").strip():
        env["AGENT_TOKEN"] = secrets.token_urlsafe(32)
    server = ServerConfig.from_env(env)
    host, port = server.listen_addr
    env["SERVER_URL"] = f"http://{connect_host(host)}:{port}"
    return server, AgentConfig.from_env(env)


def banner(server: ServerConfig, agent: AgentConfig, now: datetime | None = None) -> str:
    """What the demo prints: the dashboard link with a read token, and a curl line for CPU.

    The token is signed with READ_SECRET when set and lives 24 h (TOKEN_MAX_TTL if shorter).
    """
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    token = dashboard_token(server, now=now.timestamp())
    query = urlencode({"host": agent.host, "name": "cpu.usage_pct", "label": "core:total",
                       "from": format_time(now - timedelta(minutes=5)),
                       "to": format_time(token_expiry(server, now))}, safe=":")
    seconds = agent.collect_interval.total_seconds()
    return "\n".join([
        f"MiniObserv demo: server and agent for host {agent.host!r} "
        f"(database: {server.database_url})",
        f"  Dashboard:  {dashboard_link(agent.server_url, token)}",
        f"  Read token: {token}",
        f"  This host's CPU (the first point arrives after {seconds:g}s):",
        f'    curl -H "Authorization: Bearer {token}" '
        f'"{agent.server_url}/api/v1/metrics/query?{query}"',
        "Ctrl-C stops both.",
    ])


def main(environ: Mapping[str, str] | None = None) -> int:
    """Run the demo until SIGINT or SIGTERM; the exit status."""
    try:
        server_config, agent_config = demo_configs(os.environ if environ is None else environ)
        runner = Runner.from_config(agent_config)
    except ConfigError as err:
        print(f"miniobserv demo: configuration error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=agent_config.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("werkzeug", "alembic"):  # no line per agent POST or migration step
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        server, repos = start_server(server_config)
    except OSError as err:
        host, port = server_config.listen_addr
        print(f"miniobserv demo: cannot listen on {host}:{port}: {err.strerror or err}",
              file=sys.stderr)
        return 1
    with StopSignals() as signals:
        serving = threading.Thread(target=server.serve_forever, name="server", daemon=True)
        serving.start()
        runner.start()
        print(banner(server_config, agent_config), flush=True)
        signals.wait()
        print("stopping the agent and the server…", flush=True)
        run_interruptibly(runner.stop, lambda name: runner.sender.stop.set(), signals)
    server.shutdown()
    serving.join()
    server.server_close()
    from miniobserv.server.app import stop_background

    stop_background(server.app)
    repos.close()
    return 0


def start_server(config: ServerConfig) -> tuple[Any, Any]:
    """Migrate the store, build the app and bind a threaded werkzeug server to it."""
    from werkzeug.serving import make_server

    from miniobserv.server.app import create_app, open_store

    repos, _ = open_store(config)  # the demo's SQLite file is always reachable
    host, port = config.listen_addr
    try:
        app = create_app(config, repos, start_background=True)
        warn_if_exposed(config, [host])
        server = make_server(host, port, app, threaded=True)
    except OSError:
        repos.close()
        raise
    return server, repos


if __name__ == "__main__":
    sys.exit(main())
