"""``miniobserv demo``: server and agent in one process; its curl line really works."""

from __future__ import annotations

import shlex
import signal
import sys
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
import requests

from miniobserv.config import AgentConfig, ServerConfig
from miniobserv.demo import banner, connect_host, demo_configs, main
from tests.agent.helpers import SECRET, free_port
from tests.processes import START_TIMEOUT_S, LoggedProcess


def test_a_missing_secret_is_generated_and_shared_by_server_and_agent():
    server, agent = demo_configs({"LISTEN_ADDR": "0.0.0.0:9999"})
    assert len(server.agent_token) >= 32
    assert agent.agent_token == server.agent_token
    assert agent.server_url == "http://127.0.0.1:9999"
    assert server.database_url == "sqlite:///miniobserv.db"


def test_connect_host():
    assert [connect_host(h) for h in ("0.0.0.0", "::", "10.0.0.5", "::1")] == [
        "127.0.0.1", "127.0.0.1", "10.0.0.5", "[::1]"]


def configs(**env: str) -> tuple[ServerConfig, AgentConfig]:
    return demo_configs({"AGENT_TOKEN": SECRET, "AGENT_HOST": "web 01", **env})


def test_banner_shows_a_read_token_and_a_cpu_query_but_never_the_secret():
    server, agent = configs()
    text = banner(server, agent, datetime(2026, 6, 5, 10, 0, tzinfo=UTC))
    assert SECRET not in text
    curl = shlex.split(next(line for line in text.splitlines() if "curl" in line))
    token = curl[2].removeprefix("Authorization: Bearer ")
    assert jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})[
        "scope"] == "read"
    assert curl[3] == ("http://127.0.0.1:8080/api/v1/metrics/query?host=web+01"
                       "&name=cpu.usage_pct&label=core:total"
                       "&from=2026-06-05T09:55:00Z&to=2026-06-06T10:00:00Z")


def test_configuration_error_is_one_line(capsys):
    assert main({"LISTEN_ADDR": "nowhere"}) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "LISTEN_ADDR" in err


@pytest.mark.integration
def test_demo_runs_shows_this_hosts_cpu_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    demo = LoggedProcess([sys.executable, "-m", "miniobserv.demo"],
                         {"LISTEN_ADDR": f"127.0.0.1:{port}", "COLLECT_INTERVAL": "1s",
                          "AGENT_TOKEN": "", "DATABASE_URL": ""}, cwd=tmp_path)
    try:
        assert demo.wait_for("Ctrl-C stops both"), demo.output
        curl = shlex.split(next(line for line in demo.lines if "curl -H" in line))
        headers = {"Authorization": curl[2].removeprefix("Authorization: ")}
        deadline = time.monotonic() + START_TIMEOUT_S
        points: list = []
        while not points and time.monotonic() < deadline:
            reply = requests.get(curl[3], headers=headers, timeout=10)
            assert reply.status_code == 200, reply.text
            points = reply.json()["points"]
            time.sleep(0.5)
        assert points and 0 <= points[0]["value"] <= 100
        assert (tmp_path / "miniobserv.db").exists()
        link = next(line for line in demo.lines if "Dashboard:" in line).split()[-1]
        base, _, token = link.partition("/#token=")
        assert requests.get(base + "/api/v1/hosts", timeout=10).status_code == 401
        hosts = requests.get(base + "/api/v1/hosts", timeout=10,
                             headers={"Authorization": f"Bearer {token}"})
        assert hosts.status_code == 200 and hosts.json()["hosts"], hosts.text
        assert requests.get(base + "/", timeout=10).status_code == 200
    finally:
        demo.proc.send_signal(signal.SIGINT)
        status = demo.terminate()
    assert status == 0, demo.output
    assert "0 lost" in demo.output and "Traceback" not in demo.output


def test_read_token_lasts_a_day():
    token = banner(*configs()).split("Read token: ")[1].split()[0]
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == timedelta(days=1).total_seconds()


def test_dashboard_link_carries_the_read_token_in_its_fragment():
    text = banner(*configs())
    link = text.split("Dashboard:  ")[1].split()[0]
    token = text.split("Read token: ")[1].split()[0]
    assert link == f"http://127.0.0.1:8080/#token={token}"


def test_banner_token_follows_read_secret_and_a_short_token_max_ttl():
    read_secret = "r" * 32
    text = banner(*configs(READ_SECRET=read_secret, TOKEN_MAX_TTL="1h"))
    token = text.split("#token=")[1].split()[0]
    claims = jwt.decode(token, read_secret, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 3600 and claims["scope"] == "read"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, SECRET, algorithms=["HS256"])
