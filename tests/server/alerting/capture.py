"""A webhook receiver on loopback that records every POST (and can be told to fail)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Capture:
    """What the receiver saw; ``statuses`` scripts the answers (then 200 forever)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.statuses: list[int] = []
        self.changed = threading.Condition()
        self.url = ""

    def record(self, path: str, body: dict[str, Any]) -> int:
        with self.changed:
            self.paths.append(path)
            self.bodies.append(body)
            self.changed.notify_all()
            return self.statuses.pop(0) if self.statuses else 200

    def events(self, path: str | None = None) -> list[str]:
        with self.changed:
            return [str(b.get("event")) for p, b in zip(self.paths, self.bodies, strict=True)
                    if path is None or p == path]

    def wait_for(self, count: int, timeout: float = 60) -> bool:
        """True once ``count`` bodies arrived (a liveness bound, not a speed requirement)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.bodies) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(remaining)
        return True


@contextmanager
def capture_server() -> Iterator[Capture]:
    capture = Capture()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            status = capture.record(self.path, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    with serving(Handler) as capture.url:
        yield capture


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threading HTTP server of ``handler`` on a loopback port; its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
