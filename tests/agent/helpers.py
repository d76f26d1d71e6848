"""A real loopback HTTP server scripted to answer the agent (sentry-python style)."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SECRET = "test-secret-0123456789abcdef-0123456789"


@dataclass
class Reply:
    """One scripted answer: a status, extra headers, and an optional delay before it."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Received:
    """One request as the server saw it, body already gunzipped and decoded."""

    path: str
    headers: dict[str, str]
    body: Any
    status: int = 0  # the scripted answer

    @property
    def token(self) -> str:
        return self.headers["Authorization"].removeprefix("Bearer ")


class ScriptedServer:
    """Answers requests with ``script`` in order, then with ``default``; records each."""

    def __init__(self, port: int = 0) -> None:
        self.script: list[Reply] = []
        self.default = Reply(202)
        self.received: list[Received] = []
        self.arrived = threading.Event()
        self.on_request: Callable[[Received], None] | None = None  # runs before the answer
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def answer(self, *replies: Reply | int) -> None:
        self.script += [r if isinstance(r, Reply) else Reply(r) for r in replies]

    def next_reply(self) -> Reply:
        return self.script.pop(0) if self.script else self.default

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


def _handler(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            request = Received(self.path, dict(self.headers), json.loads(raw))
            reply = server.next_reply()
            request.status = reply.status
            if server.on_request is not None:
                server.on_request(request)
            server.received.append(request)
            server.arrived.set()
            time.sleep(reply.delay)
            body = json.dumps({"ingested": 1} if reply.status == 202 else
                              {"error": f"scripted {reply.status}"}).encode()
            try:
                self.send_response(reply.status)
                for name, value in {**reply.headers, "Content-Length": str(len(body)),
                                    "Content-Type": "application/json"}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up (a timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def free_port() -> int:
    """A port nothing listens on (yet)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
