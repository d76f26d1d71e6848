"""The stub server: JWT check, batch validation, forced failures; the agent against it."""

from __future__ import annotations

import gzip
import json
import logging
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from miniobserv.agent.sender import Sender
from miniobserv.errors import ConfigError
from miniobserv.model import Metric, MetricBatch
from miniobserv.stubserver import StubSettings, listen_addr, main, make_server
from miniobserv.tokens import mint_token
from tests.agent.helpers import SECRET, free_port
from tests.processes import LoggedProcess, start_agent


class Stub:
    def __init__(self, settings: StubSettings) -> None:
        self.settings = settings
        self.httpd = make_server(settings, ("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def post(self, body: object, token: str | None = None, gzipped: bool = True,
             path: str = "/api/v1/metrics") -> requests.Response:
        data = json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {token or mint_token(SECRET)}"}
        if gzipped:
            data, headers["Content-Encoding"] = gzip.compress(data), "gzip"
        return requests.post(self.url + path, data=data, headers=headers, timeout=10)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub(StubSettings(SECRET))
    yield server
    server.close()


def batch_json(n: int = 2, batch_id: str | None = None) -> dict:
    body = MetricBatch("web-01", [Metric(datetime.now(UTC), "web-01", "mem.used_pct", float(i))
                                  for i in range(n)]).to_json()
    return {**body, "batch_id": batch_id} if batch_id else body


def test_accepts_a_valid_batch_and_logs_it(stub, caplog):
    with caplog.at_level(logging.INFO, logger="miniobserv.stubserver"):
        response = stub.post(batch_json(3, "2f1b6a52-5a3e-4e43-9f52-7b0e8d1f4c11"))
    assert (response.status_code, response.json()) == (202, {"ingested": 3})
    assert "batch 2f1b6a52-5a3e-4e43-9f52-7b0e8d1f4c11 from web-01: 3 metrics" in caplog.text


def test_a_retried_batch_is_recognised(stub, caplog):
    body = batch_json(1, "2f1b6a52-5a3e-4e43-9f52-7b0e8d1f4c11")
    with caplog.at_level(logging.INFO, logger="miniobserv.stubserver"):
        stub.post(body)
        stub.post(body)
    assert caplog.text.count("a retry, already received") == 1


@pytest.mark.parametrize("token", [
    "not-a-jwt",
    mint_token("another-secret-0123456789abcdef-0123456789"),
    mint_token(SECRET, ttl=timedelta(seconds=1), now=0),
    mint_token(SECRET, issuer="someone-else"),
])
def test_refuses_bad_tokens_with_401(stub, token):
    response = stub.post(batch_json(), token=token)
    assert (response.status_code, response.json()) == (401, {"error": "unauthorized"})


def test_refuses_an_invalid_batch_with_400_naming_the_field(stub):
    body = batch_json()
    body["metrics"][1]["name"] = "cpu_usage_pct"
    response = stub.post(body, gzipped=False)
    assert response.status_code == 400
    assert response.json()["error"].startswith("metrics[1].name")


def test_refuses_a_corrupt_gzip_body_with_400(stub):
    response = requests.post(stub.url + "/api/v1/metrics", data=b"\x1f\x8bnot gzip",
                             headers={"Authorization": f"Bearer {mint_token(SECRET)}",
                                      "Content-Encoding": "gzip"}, timeout=10)
    assert response.status_code == 400


def test_stub_status_forces_every_answer(stub):
    stub.settings.status = 503
    response = stub.post(batch_json())
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"


def test_fail_rate_fails_that_fraction_with_503(stub):
    draws = iter([0.1, 0.9])
    stub.settings.fail_rate, stub.settings.rand = 0.5, lambda: next(draws)
    assert [stub.post(batch_json()).status_code for _ in range(2)] == [503, 202]


def test_the_agents_sender_delivers_to_it(stub):
    sender = Sender(stub.url, SECRET)
    assert sender.send(MetricBatch("web-01", [Metric(datetime.now(UTC), "web-01", "load.avg_1m", 1.0)]))


@pytest.mark.parametrize("env,variable", [
    ({}, "AGENT_TOKEN"),
    ({"AGENT_TOKEN": SECRET, "STUB_STATUS": "700"}, "STUB_STATUS"),
    ({"AGENT_TOKEN": SECRET, "STUB_FAIL_RATE": "1.5"}, "STUB_FAIL_RATE"),
    ({"AGENT_TOKEN": SECRET, "STUB_FAIL_RATE": "half"}, "STUB_FAIL_RATE"),
    ({"AGENT_TOKEN": SECRET, "LISTEN_ADDR": "nowhere"}, "LISTEN_ADDR"),
])
def test_configuration_errors_name_the_variable(capsys, env, variable):
    assert main(env) == 2
    assert variable in capsys.readouterr().err


def test_settings_and_listen_address_from_the_environment():
    settings = StubSettings.from_env({"AGENT_TOKEN": SECRET, "STUB_STATUS": "429",
                                      "STUB_FAIL_RATE": "0.25"})
    assert (settings.status, settings.fail_rate) == (429, 0.25)
    assert listen_addr(None) == ("127.0.0.1", 8080)
    assert listen_addr("0.0.0.0:9000") == ("0.0.0.0", 9000)
    with pytest.raises(ConfigError):
        StubSettings.from_env({"AGENT_TOKEN": "short"})


@pytest.mark.integration
def test_agent_process_retries_and_drops_against_the_stub_process():
    port = free_port()
    stub = LoggedProcess([sys.executable, "-m", "miniobserv.stubserver"],
                         {"AGENT_TOKEN": SECRET, "LISTEN_ADDR": f"127.0.0.1:{port}",
                          "STUB_STATUS": "400"})
    agent = None
    try:
        assert stub.wait_for("stub server on"), stub.output
        agent = start_agent(f"http://127.0.0.1:{port}")
        assert agent.wait_for("dropped: server answered HTTP 400"), agent.output
        assert agent.terminate() == 0
    finally:
        if agent is not None:
            agent.terminate()
        assert stub.terminate() == 0, stub.output
    assert "answering 400 (STUB_STATUS)" in stub.output
