"""A real agent killed with SIGKILL after the server stored a log chunk and before the agent
heard the answer, the file grown meanwhile: every line stored exactly once after the restart.

A proxy in front of real gunicorn (real SQLite) forwards each log batch, so the server stores
it, then holds the answer until the agent is dead.
"""

from __future__ import annotations

import gzip
import json
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from miniobserv.agent.logstate import STATE_FILE
from tests.processes import Gunicorn, start_agent

pytestmark = pytest.mark.integration


class HoldingProxy(ThreadingHTTPServer):
    """Forwards to ``upstream``; while ``hold`` is set, a log batch's answer waits for
    ``release`` once the server answered. ``answers`` lists (batch_id, status) of log batches."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = upstream
        self.hold = threading.Event()
        self.held = threading.Event()  # a log batch was stored and its answer is held
        self.release = threading.Event()
        self.answers: list[tuple[str, int]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(BaseHTTPRequestHandler):
    server: HoldingProxy

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        answer = requests.post(self.server.upstream + self.path, data=body, headers=headers,
                               timeout=30)
        if self.path == "/api/v1/logs":
            batch = json.loads(gzip.decompress(body))
            self.server.answers.append((batch["batch_id"], answer.status_code))
            if self.server.hold.is_set():
                self.server.held.set()
                self.server.release.wait(60)
        self.send_response(answer.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def proxy(sqlite_url: str) -> Iterator[HoldingProxy]:
    server = Gunicorn(sqlite_url)
    try:
        server.wait_ready()
        front = HoldingProxy(server.url)
        threading.Thread(target=front.serve_forever, daemon=True).start()
        yield front
        front.release.set()
        front.shutdown()
    finally:
        server.terminate()


def stored(sqlite_url: str) -> list[str]:
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        return [row[0] for row in conn.execute("SELECT message FROM logs ORDER BY id")]


def wait_until(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_kill_9_between_the_server_storing_a_chunk_and_the_checkpoint(tmp_path, proxy,
                                                                        sqlite_url):
    log_file = tmp_path / "app.log"
    log_file.write_text("")
    env = {"LOG_PATHS": str(log_file), "LOG_STATE_DIR": str(tmp_path / "state")}
    proxy.hold.set()
    agent = start_agent(proxy.url, **env)
    try:
        assert agent.wait_for("following log file"), agent.output
        with open(log_file, "a") as out:  # no timestamps: the entries carry the read time
            out.write("".join(f"before {i}\n" for i in range(5)))
        assert proxy.held.wait(60), agent.output  # stored by the server, answer held
        assert stored(sqlite_url) == [f"before {i}" for i in range(5)]
        agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait(10)
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
    first_id = proxy.answers[0][0]
    with open(log_file, "a") as out:  # the file grows while the agent is down
        out.write("".join(f"after {i}\n" for i in range(5)))
    time.sleep(1.1)  # a later read time than the chunk's: a re-read must not take it
    proxy.hold.clear()
    proxy.release.set()

    again = start_agent(proxy.url, **env)
    try:
        expected = [f"before {i}" for i in range(5)] + [f"after {i}" for i in range(5)]
        assert wait_until(lambda: set(stored(sqlite_url)) >= set(expected)), again.output
        state = tmp_path / "state" / STATE_FILE
        assert wait_until(lambda: not json.loads(state.read_text()).get("inflight")), \
            again.output
    finally:
        assert again.terminate(timeout=30) == 0
    assert stored(sqlite_url) == expected  # each line once, in order
    assert [status for batch_id, status in proxy.answers if batch_id == first_id] == [202, 202]
    assert all(status == 202 for _, status in proxy.answers)  # a repeat, never a 409
    assert "re-sending a log chunk in flight" in again.output
