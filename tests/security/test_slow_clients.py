"""Slow clients and slow starts, against real gunicorn with the shipped configuration.

With sync workers (``gunicorn -k sync -w 4``, today's Dockerfile), four connections that
trickle their headers hold all four workers until gunicorn's 30 s timeout; checked by hand
on this code: with ``-k sync -w 4`` and the 16 trickling clients below, ``/readyz`` got no
answer within the 2 s (nor within 10 s). The shipped config (``gthread`` workers, 32 threads
each, keep-alive) keeps answering. It also bounds the request line and headers, and checks
the configuration and migrates once, in the master, before the workers fork.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from tests.conftest import PostgresDatabases
from tests.processes import CONFIG_ARGS, Gunicorn

pytestmark = pytest.mark.integration

SLOW_CLIENTS = 16
ANSWER_WITHIN_S = 2.0
TRICKLE_EVERY_S = 0.5
# gunicorn_conf's bounds (importing it would read this process's environment)
REQUEST_LINE_BYTES = 4094
HEADER_FIELDS = 50
HEADER_FIELD_BYTES = 8190


class Tricklers:
    """``count`` connections that send a request line, then one header byte at a time."""

    def __init__(self, port: int, count: int) -> None:
        self.stop = threading.Event()
        self.sockets = [socket.create_connection(("127.0.0.1", port), timeout=5)
                        for _ in range(count)]
        for sock in self.sockets:
            sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _trickle(self) -> None:
        while not self.stop.wait(TRICKLE_EVERY_S):
            for sock in self.sockets:
                try:
                    sock.sendall(b"a")
                except OSError:  # the server closed it: it stays closed
                    pass

    def close(self) -> None:
        self.stop.set()
        self._thread.join(5)
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Gunicorn]:
    proc = Gunicorn(f"sqlite:///{tmp_path}/slow.db", args=CONFIG_ARGS,
                    env={"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "run")})
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.terminate()


def test_sixteen_slow_clients_do_not_stop_a_new_client(server: Gunicorn) -> None:
    slow = Tricklers(server.port, SLOW_CLIENTS)
    try:
        time.sleep(1.5)  # past the workers' first wait for data: each holds a thread now
        for _ in range(3):
            started = time.monotonic()
            answer = requests.get(server.url + "/readyz", timeout=ANSWER_WITHIN_S)
            assert answer.status_code == 200
            assert time.monotonic() - started < ANSWER_WITHIN_S
    finally:
        slow.close()


def raw_status(port: int, request: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        head = sock.recv(4096)
    return int(head.split(b" ", 2)[1])


def request_line_of(length: int) -> bytes:
    """``GET /xxx… HTTP/1.1`` of exactly ``length`` bytes, without its CRLF."""
    fixed = len("GET / HTTP/1.1")
    return b"GET /" + b"x" * (length - fixed) + b" HTTP/1.1"


def test_no_control_socket_is_opened(server: Gunicorn, tmp_path: Path) -> None:
    """gunicorn 25.1+ would open ``$XDG_RUNTIME_DIR/gunicorn.ctl`` (or one under ``$HOME``)."""
    assert requests.get(server.url + "/readyz", timeout=5).status_code == 200
    assert "Control socket" not in server.output
    assert not list(tmp_path.rglob("*.ctl"))


def test_the_request_line_is_bounded(server: Gunicorn) -> None:
    at_limit = request_line_of(REQUEST_LINE_BYTES)
    assert raw_status(server.port, at_limit + b"\r\nHost: x\r\n\r\n") == 404  # the app's
    above = request_line_of(REQUEST_LINE_BYTES + 1)
    assert raw_status(server.port, above + b"\r\nHost: x\r\n\r\n") == 414  # gunicorn's


def test_the_headers_are_bounded(server: Gunicorn) -> None:
    def with_headers(count: int, size: int = 12) -> bytes:  # size: one field with its CRLF
        fields = b"".join(b"X-%03d: %s\r\n" % (i, b"v" * (size - 9))
                          for i in range(count - 1))
        return b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"

    assert raw_status(server.port, with_headers(HEADER_FIELDS)) == 200
    assert raw_status(server.port, with_headers(HEADER_FIELDS + 1)) == 431  # too many
    big = HEADER_FIELD_BYTES
    assert raw_status(server.port, with_headers(2, big)) == 200
    assert raw_status(server.port, with_headers(2, big + 1)) == 431  # too large


def test_migrations_run_once_in_the_master(postgres_databases: PostgresDatabases) -> None:
    url = postgres_databases.create(migrated=False)
    server = Gunicorn(url, args=CONFIG_ARGS, env={"LOG_LEVEL": "INFO"})
    try:
        server.wait_ready()
        master = f"[{server.proc.pid}]"
        alembic_lines = [line for line in server.lines if "alembic.runtime.migration" in line]
        assert any("Running upgrade" in line for line in alembic_lines)
        assert all(master in line for line in alembic_lines), server.output
        booted = next(i for i, line in enumerate(server.lines) if "Booting worker" in line)
        assert max(server.lines.index(line) for line in alembic_lines) < booted
    finally:
        assert server.terminate() == 0, server.output
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()


def test_without_the_config_file_the_workers_migrate_as_before(tmp_path: Path) -> None:
    server = Gunicorn(f"sqlite:///{tmp_path}/bare.db", env={"LOG_LEVEL": "INFO"})
    try:
        server.wait_ready()
        master = f"[{server.proc.pid}]"
        alembic_lines = [line for line in server.lines if "alembic.runtime.migration" in line]
        assert alembic_lines and not any(master in line for line in alembic_lines)
    finally:
        server.terminate()


def test_an_unreachable_database_does_not_stop_the_start(tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    url = f"postgresql://nobody@127.0.0.1:{closed.getsockname()[1]}/none"
    server = Gunicorn(url, args=CONFIG_ARGS)
    try:
        assert server.wait_for("the workers will retry the migrations")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(server.url + "/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        assert requests.get(server.url + "/readyz", timeout=10).status_code == 503
        time.sleep(2)
        assert server.proc.poll() is None
        assert server.output.count("Booting worker") == 2  # no kill-and-restart loop
    finally:
        server.terminate()
        closed.close()
