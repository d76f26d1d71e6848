"""Real processes for the integration tests: gunicorn serving the app, the agent, the stub."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from miniobserv.tokens import mint_token
from tests.agent.helpers import SECRET, free_port

START_TIMEOUT_S = 60
CONFIG_ARGS = ["-c", "python:miniobserv.server.gunicorn_conf"]  # the shipped production config


class LoggedProcess:
    """A child process whose stderr (merged with stdout) is collected line by line."""

    def __init__(self, args: list[str], env: Mapping[str, str],
                 cwd: str | os.PathLike[str] | None = None) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(args, env={**os.environ, **env}, text=True, cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = START_TIMEOUT_S) -> bool:
        """True once a line containing ``text`` was printed; False after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(text in line for line in self.lines):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    return any(text in line for line in self.lines)
                self._changed.wait(min(remaining, 0.5))
        return True

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit status (SIGKILL if it does not end within ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._reader.join(5)


class Gunicorn(LoggedProcess):
    """``gunicorn -w 2 'miniobserv.server.wsgi:app'`` on a free loopback port.

    ``args`` go before the app (e.g. :data:`CONFIG_ARGS`, or ``-k sync``).
    """

    def __init__(self, database_url: str, port: int | None = None,
                 env: Mapping[str, str] | None = None, args: Sequence[str] = ()) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{self.port}",
             *args, "miniobserv.server.wsgi:app"],
            {"DATABASE_URL": database_url, "AGENT_TOKEN": SECRET, **(env or {})})

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if requests.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"gunicorn did not become ready:\n{self.output}")

    def query(self, host: str, name: str, **params: Any) -> dict[str, Any]:
        """GET /api/v1/metrics/query over the last and next 10 minutes, with a read token."""
        now = datetime.now(UTC)
        window = {"from": (now - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "to": (now + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")}
        headers = {"Authorization": f"Bearer {mint_token(SECRET, scope='read')}"}
        response = requests.get(self.url + "/api/v1/metrics/query", headers=headers,
                                params={"host": host, "name": name, "bucket": "10s",
                                        **window, **params}, timeout=10)
        assert response.status_code == 200, response.text
        return dict(response.json())


def start_agent(server_url: str, **env: str) -> LoggedProcess:
    """``python -m miniobserv.agent`` with a 1 s interval (overridable through ``env``)."""
    settings = {"SERVER_URL": server_url, "AGENT_TOKEN": SECRET, "COLLECT_INTERVAL": "1s",
                "SHUTDOWN_TIMEOUT": "2s", **env}
    return LoggedProcess([sys.executable, "-m", "miniobserv.agent"], settings)
