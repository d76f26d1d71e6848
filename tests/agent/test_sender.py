"""The sender against a real loopback HTTP server scripted to fail in every way."""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import UTC, datetime

import jwt
import pytest

from miniobserv.agent.sender import Sender, TokenSource
from miniobserv.model import LogBatch, LogEntry, Metric, MetricBatch
from tests.agent.helpers import SECRET, Reply, ScriptedServer, free_port

T0 = datetime(2026, 6, 5, 10, 0, 0, tzinfo=UTC)


class RecordingStop(threading.Event):
    """A stop event that records each backoff and returns at once (the injected sleep)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        return super().wait(0)


def batch(n: int = 2, batch_id: uuid.UUID | None = None) -> MetricBatch:
    metrics = [Metric(T0, "web-01", "cpu.usage_pct", float(i), {"core": str(i)})
               for i in range(n)]
    return MetricBatch("web-01", metrics, batch_id)


def make_sender(url: str, stop: threading.Event | None = None, **kwargs) -> Sender:
    sender = Sender(url, SECRET, stop=stop or RecordingStop(), timeout=5.0,
                    rand=lambda: 0.5, **kwargs)
    sender.BASE_S, sender.CAP_S = 0.01, 0.08
    return sender


def test_503_503_202_retries_the_same_batch_id_until_accepted(server, caplog):
    server.answer(503, 503, 202)
    sender = make_sender(server.url)
    with caplog.at_level(logging.WARNING):
        result = sender.send(batch())
    assert (result.outcome, result.attempts, result.status) == ("sent", 3, 202)
    ids = {r.body["batch_id"] for r in server.received}
    assert len(server.received) == 3 and len(ids) == 1
    uuid.UUID(ids.pop())
    assert sender.stop.waits == [0.01, 0.02]
    assert caplog.text.count("not sent (HTTP 503") == 2


def test_body_is_gzipped_json_of_the_batch_with_a_bearer_token(server):
    sent = batch(3, uuid.uuid4())
    make_sender(server.url).send(sent)
    [request] = server.received
    assert request.path == "/api/v1/metrics"
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.headers["Content-Type"] == "application/json"
    assert request.body == sent.to_json()
    claims = jwt.decode(request.token, SECRET, algorithms=["HS256"])
    assert claims["iss"] == "miniobserv-agent"
    assert claims["exp"] - claims["iat"] == 24 * 3600
    assert "scope" not in claims


def test_log_batches_go_to_the_logs_endpoint(server):
    entries = [LogEntry(T0, "web-01", "error", "disk full", "/var/log/syslog")]
    assert make_sender(server.url).send(LogBatch("web-01", entries)).is_sent
    assert server.received[0].path == "/api/v1/logs"
    assert server.received[0].body["entries"][0]["message"] == "disk full"


@pytest.mark.parametrize("status", [400, 403, 404, 413, 422])
def test_other_4xx_drops_the_batch_and_the_next_one_goes(server, caplog, status):
    server.answer(status, 202)
    sender = make_sender(server.url)
    with caplog.at_level(logging.WARNING):
        first = sender.send(batch())
        second = sender.send(batch())
    assert (first.outcome, first.attempts, first.status) == ("dropped", 1, status)
    assert second.is_sent
    assert len(server.received) == 2
    assert sender.stop.waits == []
    assert f"dropped: server answered HTTP {status}" in caplog.text


@pytest.mark.parametrize("status", [408, 500, 502, 504])
def test_timeouts_and_server_errors_are_retried(server, status):
    server.answer(status, 202)
    assert make_sender(server.url).send(batch()).attempts == 2


def test_429_waits_as_long_as_retry_after_says(server):
    server.answer(Reply(429, {"Retry-After": "7"}), 202)
    sender = make_sender(server.url)
    assert sender.send(batch()).is_sent
    assert sender.stop.waits == [7.0]


def test_retry_after_as_an_http_date(server):
    server.answer(Reply(503, {"Retry-After": "Fri, 05 Jun 2026 10:00:42 GMT"}), 202)
    sender = make_sender(server.url, clock=lambda: T0.timestamp())
    assert sender.send(batch()).is_sent
    assert sender.stop.waits == [42.0]


def test_absurd_retry_after_is_capped(server):
    server.answer(Reply(429, {"Retry-After": "86400"}), 202)
    sender = make_sender(server.url)
    sender.send(batch())
    assert sender.stop.waits == [Sender.RETRY_AFTER_MAX_S]


@pytest.mark.parametrize("header", ["0", "-5", "Fri, 05 Jun 2026 09:59:00 GMT"])
def test_a_retry_after_shorter_than_the_backoff_does_not_shorten_it(server, header):
    """``Retry-After: 0`` (or a date in the past) from a proxy: still the backoff's pace."""
    server.answer(Reply(503, {"Retry-After": header}), Reply(429, {"Retry-After": header}), 202)
    sender = make_sender(server.url, clock=lambda: T0.timestamp())
    assert sender.send(batch()).is_sent
    assert sender.stop.waits == [0.01, 0.02]  # rand 0.5: no jitter; BASE_S 0.01


def test_401_mints_a_new_token_and_retries_at_once(server):
    server.answer(401, 202)
    sender = make_sender(server.url)
    result = sender.send(batch())
    assert (result.outcome, result.attempts) == ("sent", 2)
    first, second = (r.token for r in server.received)
    assert first != second
    assert sender.tokens.minted == 2
    assert sender.stop.waits == [0.0]
    assert server.received[0].body["batch_id"] == server.received[1].body["batch_id"]


def test_repeated_401_backs_off_but_never_gives_up(server):
    server.answer(401, 401, 401, 202)
    sender = make_sender(server.url)
    assert sender.send(batch()).attempts == 4
    assert sender.stop.waits == [0.0, 0.02, 0.04]
    assert sender.tokens.minted == 4


def test_no_answer_within_the_timeout_is_retried(server):
    server.answer(Reply(202, delay=3.0), 202)
    sender = make_sender(server.url)
    sender.timeout = 0.2
    result = sender.send(batch())
    assert (result.outcome, result.attempts) == ("sent", 2)


def test_connection_refused_is_retried_until_the_server_is_back(caplog):
    port = free_port()
    revived: list[ScriptedServer] = []
    backoffs: list[int] = []

    def rand() -> float:  # called once per backoff: bring the server up after two failures
        backoffs.append(1)
        if len(backoffs) == 2:
            revived.append(ScriptedServer(port))
        return 0.5

    sender = Sender(f"http://127.0.0.1:{port}", SECRET, stop=RecordingStop(), rand=rand)
    try:
        with caplog.at_level(logging.WARNING, logger="miniobserv.agent.sender"):
            result = sender.send(batch())
        assert (result.outcome, result.attempts) == ("sent", 3)
        assert "Connection refused" in caplog.text
        assert len(revived[0].received) == 1
    finally:
        for srv in revived:
            srv.close()


def test_stop_cuts_a_backoff_short_and_returns_aborted(server):
    server.default = Reply(503)
    stop = threading.Event()
    sender = make_sender(server.url, stop=stop)
    sender.BASE_S = sender.CAP_S = 3600.0
    results = []
    worker = threading.Thread(target=lambda: results.append(sender.send(batch())))
    worker.start()
    assert server.arrived.wait(10)
    stop.set()
    worker.join(30)
    assert not worker.is_alive()
    assert results[0].outcome == "aborted"
    assert len(server.received) == 1


def test_a_stopped_sender_does_not_send():
    stop = threading.Event()
    stop.set()
    result = make_sender(f"http://127.0.0.1:{free_port()}", stop=stop).send(batch())
    assert (result.outcome, result.attempts) == ("aborted", 0)


def test_token_is_reused_then_renewed_at_80_percent_of_its_life():
    now = [1_000_000.0]
    tokens = TokenSource(SECRET, clock=lambda: now[0])
    first = tokens.get()
    now[0] += 0.8 * 86400 - 1
    assert tokens.get() == first
    now[0] += 1
    renewed = tokens.get()
    assert renewed != first
    assert jwt.decode(renewed, SECRET, algorithms=["HS256"],
                      options={"verify_exp": False})["exp"] == int(now[0]) + 86400
    assert tokens.minted == 2


def test_sender_renews_its_token_after_20_hours(server):
    now = [T0.timestamp()]
    sender = make_sender(server.url, clock=lambda: now[0])
    sender.send(batch())
    now[0] += 20 * 3600
    sender.send(batch())
    first, second = (r.token for r in server.received)
    assert first != second


def test_the_token_never_appears_in_the_logs(server, caplog):
    server.answer(401, 503, 400)
    with caplog.at_level(logging.DEBUG):
        make_sender(server.url).send(batch())
    assert server.received
    for request in server.received:
        assert request.token not in caplog.text
    assert SECRET not in caplog.text
