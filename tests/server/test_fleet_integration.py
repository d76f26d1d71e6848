"""Two gunicorn workers against PostgreSQL: one delivery per event, state kept across a restart.

A real webhook receiver on loopback counts deliveries. The waits are liveness bounds (the
events must arrive eventually); the only fixed pauses are the quiet periods that check
nothing more arrives.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from miniobserv.tokens import mint_token
from tests.agent.helpers import SECRET
from tests.processes import Gunicorn
from tests.server.alerting.capture import Capture, capture_server

pytestmark = pytest.mark.integration

HOST = "web-01"
RULE = {"host": "*", "name": "custom.test.load", "op": ">", "threshold": 50, "for": "2s"}
QUIET_S = 4.0  # several evaluation intervals in which nothing more may arrive


def fleet_env(capture: Capture) -> dict[str, str]:
    return {"ALERT_INTERVAL": "1s", "HOST_STALE_AFTER": "5s", "HOST_DOWN_AFTER": "10s",
            "ALERT_RULES": json.dumps([RULE]),
            "ALERT_NOTIFICATIONS": json.dumps([{"type": "webhook", "url": capture.url + "/h"}])}


def batch(value: float, points: int = 1) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"host": HOST, "batch_id": str(uuid.uuid4()), "metrics": [
        {"time": now, "name": "custom.test.load", "value": value} for _ in range(points)]}


class Feeder:
    """Posts the current ``value`` every 0.3 s while ``value`` is not None; survives outages."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.value: float | None = None
        self.stop = threading.Event()
        self.headers = {"Authorization": f"Bearer {mint_token(SECRET, scope='ingest')}"}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.3):
            if self.value is None:
                continue
            try:
                requests.post(self.url + "/api/v1/metrics", json=batch(self.value),
                              headers=self.headers, timeout=5)
            except requests.RequestException:
                pass  # the server is restarting


def read_headers() -> dict[str, str]:
    """Hosts, alerts and /metrics need a read token by default."""
    return {"Authorization": f"Bearer {mint_token(SECRET, scope='read')}"}


def alerts(url: str) -> list[dict[str, Any]]:
    answer: list[dict[str, Any]] = requests.get(url + "/api/v1/alerts", headers=read_headers(),
                                                timeout=5).json()["alerts"]
    return answer


@pytest.fixture
def capture() -> Iterator[Capture]:
    with capture_server() as receiver:
        yield receiver


def start(url: str, env: dict[str, str], port: int | None = None) -> Gunicorn:
    server = Gunicorn(url, port, env)
    server.wait_ready()
    return server


def test_one_delivery_per_event_across_workers_and_a_restart(fresh_postgres_url: str,
                                                             capture: Capture) -> None:
    env = fleet_env(capture)
    server = start(fresh_postgres_url, env)
    feeder = Feeder(server.url)
    try:
        feeder.value = 90.0
        assert capture.wait_for(1), server.output
        assert capture.events() == ["firing"]
        body = capture.bodies[0]
        assert body["host"] == HOST and body["value"] == 90.0 and body["rule"]["for"] == "2s"
        assert set(body) >= {"event", "host", "rule", "value", "at"}
        [firing] = alerts(server.url)
        assert firing["state"] == "firing"

        server.terminate()  # the feeder keeps posting into the void meanwhile
        server = start(fresh_postgres_url, env, server.port)
        time.sleep(QUIET_S)
        [after] = alerts(server.url)
        assert (after["state"], after["since"]) == ("firing", firing["since"])
        assert capture.events() == ["firing"]  # not announced again after the restart

        feeder.value = 10.0
        assert capture.wait_for(2), server.output
        feeder.value = None  # silence: the host goes down
        assert capture.wait_for(3), server.output
        feeder.value = 10.0
        assert capture.wait_for(4), server.output
        time.sleep(QUIET_S)
        assert capture.events() == ["firing", "resolved", "host.down", "host.recovered"]
        assert requests.get(server.url + "/api/v1/hosts", headers=read_headers(),
                            timeout=5).json()["hosts"][0]["status"] == "ok"
    finally:
        feeder.stop.set()
        server.terminate()
    assert server.output.count("this process leads evaluation") == 1


def families(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_metrics_counters_are_totals_over_both_workers(fresh_postgres_url: str) -> None:
    server = start(fresh_postgres_url, {})
    headers = {"Authorization": f"Bearer {mint_token(SECRET, scope='ingest')}",
               "Content-Type": "application/json"}
    slow: socket.socket | None = None
    try:
        slow, rest = _hold_a_worker(server.port, batch(1.0, points=3), headers)
        for _ in range(10):  # one worker is busy reading the slow body: the other serves these
            assert requests.post(server.url + "/api/v1/metrics", json=batch(2.0, points=3),
                                 headers=headers, timeout=10).status_code == 202
        assert requests.post(server.url + "/api/v1/metrics", json={"host": HOST},
                             headers=headers, timeout=10).status_code == 400
        assert _finish(slow, rest).startswith(b"HTTP/1.1 202")
        for _ in range(6):  # whichever worker answers, the totals are the same
            text = requests.get(server.url + "/metrics", headers=read_headers(), timeout=10).text
            values = families(text)
            assert values[("miniobserv_ingested_points_total", ())] == 33
            assert values[("miniobserv_ingested_batches_total", (("kind", "metrics"),))] == 11
            assert values[("miniobserv_rejected_batches_total", (("kind", "metrics"),
                                                                 ("status", "400")))] == 1
            assert values[("miniobserv_custom_test_load", (("host", HOST),))] == 2.0
    finally:
        if slow is not None:
            slow.close()  # frees the worker if an assertion failed half-way
        server.terminate()


def _hold_a_worker(port: int, body: dict[str, Any],
                   headers: dict[str, str]) -> tuple[socket.socket, bytes]:
    """Send a request's headers and half its body: a sync worker waits for the rest."""
    data = json.dumps(body).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST /api/v1/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
                 f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode())
    sock.sendall(data[:len(data) // 2])
    time.sleep(0.5)  # let a worker accept it before the other requests are sent
    return sock, data[len(data) // 2:]


def _finish(sock: socket.socket, rest: bytes) -> bytes:
    sock.sendall(rest)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)
