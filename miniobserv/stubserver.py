"""``python -m miniobserv.stubserver``: a fake ingest server for trying the agent (SPEC §1).

It checks each request's JWT against ``AGENT_TOKEN`` (HS256, ``exp`` and ``iss`` required),
validates the batch with the shared model, logs one line per batch and answers 202
``{"ingested": n}``. To watch the agent retry and drop: ``STUB_STATUS=503`` answers every
batch with that status, ``STUB_FAIL_RATE=0.3`` answers 503 to that fraction of batches.
``LISTEN_ADDR`` defaults to ``127.0.0.1:8080``. No database, nothing stored.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
import signal
import sys
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt

from miniobserv.errors import ConfigError, ValidationError
from miniobserv.model import parse_log_batch, parse_metric_batch
from miniobserv.tokens import ALGORITHM, ISSUERS

log = logging.getLogger("miniobserv.stubserver")

MAX_BODY_BYTES = 8 * 1024 * 1024
PARSERS: Mapping[str, Callable[[Any], Any]] = {
    "/api/v1/metrics": parse_metric_batch,
    "/api/v1/logs": parse_log_batch,
}


@dataclass
class StubSettings:
    """What the stub answers: the secret to check, a forced status, a failure rate."""

    secret: str = field(repr=False)
    status: int | None = None
    fail_rate: float = 0.0
    rand: Callable[[], float] = random.random
    seen: set[str] = field(default_factory=set)
    accepted: Counter[str] = field(default_factory=Counter)  # batch_id → 202 answers
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StubSettings:
        """Read AGENT_TOKEN, STUB_STATUS and STUB_FAIL_RATE; ConfigError names the variable."""
        secret = env.get("AGENT_TOKEN", "").strip()
        if len(secret) < 16:
            raise ConfigError("AGENT_TOKEN is required and must be at least 16 characters")
        return cls(secret, _status(env.get("STUB_STATUS")), _rate(env.get("STUB_FAIL_RATE")))

    def is_duplicate(self, batch_id: str | None) -> bool:
        """True when a batch with this id was already received (a retry)."""
        if batch_id is None:
            return False
        with self.lock:
            seen = batch_id in self.seen
            self.seen.add(batch_id)
            self.accepted[batch_id] += 1
        return seen


def _status(text: str | None) -> int | None:
    if not text or not text.strip():
        return None
    if not text.strip().isdigit() or not 200 <= int(text) <= 599:
        raise ConfigError(f"STUB_STATUS={text!r} must be an HTTP status from 200 to 599")
    return int(text)


def _rate(text: str | None) -> float:
    if not text or not text.strip():
        return 0.0
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"STUB_FAIL_RATE={text!r} must be a number from 0 to 1")
    return rate


def listen_addr(text: str | None) -> tuple[str, int]:
    """``host:port`` from LISTEN_ADDR (default 127.0.0.1:8080)."""
    text = (text or "").strip() or "127.0.0.1:8080"
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"LISTEN_ADDR={text!r} must be host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


class StubHandler(BaseHTTPRequestHandler):
    """Answers the agent's POSTs; ``server.settings`` holds the :class:`StubSettings`."""

    server_version = "miniobserv-stub"
    protocol_version = "HTTP/1.1"

    @property
    def settings(self) -> StubSettings:
        settings: StubSettings = getattr(self.server, "settings")  # noqa: B009 - set below
        return settings

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path in ("/healthz", "/readyz"):
            self._reply(200, {"status": "ok"})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parse = PARSERS.get(self.path)
        if parse is None:
            self._reply(404, {"error": "not found"})
        elif not self._authorized():
            self._reply(401, {"error": "unauthorized"})
        elif self.settings.status is not None and self.settings.status != 202:
            self._fail(self.settings.status, "STUB_STATUS")
        elif self.settings.rand() < self.settings.fail_rate:
            self._fail(503, "STUB_FAIL_RATE")
        else:
            self._ingest(parse, body)

    def _authorized(self) -> bool:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme != "Bearer" or not token:
            return False
        try:
            claims = jwt.decode(token, self.settings.secret, algorithms=[ALGORITHM],
                                options={"require": ["exp", "iss"]}, leeway=30)
        except jwt.InvalidTokenError:
            return False
        return claims.get("iss") in ISSUERS

    def _fail(self, status: int, why: str) -> None:
        log.warning("answering %d (%s)", status, why)
        headers = {"Retry-After": "1"} if status in (429, 503) else {}
        self._reply(status, {"error": f"{HTTPStatus(status).phrase} ({why})"}, headers)

    def _ingest(self, parse: Callable[[Any], Any], body: bytes) -> None:
        try:
            batch = parse(json.loads(_decoded(self.headers.get("Content-Encoding"), body)))
        except ValidationError as err:
            log.warning("rejected batch: %s", err)
            self._reply(400, {"error": str(err)})
            return
        except (ValueError, OSError, EOFError, zlib.error) as err:
            self._reply(400, {"error": f"body: not JSON or not gzip ({err})"})
            return
        items = getattr(batch, "metrics", None) or getattr(batch, "entries", [])
        batch_id = None if batch.batch_id is None else str(batch.batch_id)
        log.info("batch %s from %s: %d %s%s", batch_id, batch.host, len(items),
                 self.path.rsplit("/", 1)[-1],
                 " (a retry, already received)" if self.settings.is_duplicate(batch_id) else "")
        self._reply(202, {"ingested": len(items)})

    def _reply(self, status: int, payload: dict[str, Any],
               headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        log.debug("%s " + format, self.address_string(), *args)


def _decoded(encoding: str | None, body: bytes) -> bytes:
    data = gzip.decompress(body) if (encoding or "").lower() == "gzip" else body
    if len(data) > MAX_BODY_BYTES:
        raise ValueError(f"more than {MAX_BODY_BYTES} bytes")
    return data


def make_server(settings: StubSettings, addr: tuple[str, int]) -> ThreadingHTTPServer:
    """A stub server bound to ``addr`` (port 0 picks a free one); call serve_forever()."""
    server = ThreadingHTTPServer(addr, StubHandler)
    server.daemon_threads = True
    server.settings = settings  # type: ignore[attr-defined]
    return server


def main(environ: Mapping[str, str] | None = None) -> int:
    """Run the stub server until SIGINT/SIGTERM."""
    env = os.environ if environ is None else environ
    try:
        settings = StubSettings.from_env(env)
        server = make_server(settings, listen_addr(env.get("LISTEN_ADDR")))
    except ConfigError as err:
        print(f"miniobserv stubserver: configuration error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"miniobserv stubserver: cannot listen: {err}", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    host, port = server.server_address[:2]
    log.info("stub server on http://%s:%s (status=%s, fail rate=%g)", host, port,
             settings.status or 202, settings.fail_rate)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
