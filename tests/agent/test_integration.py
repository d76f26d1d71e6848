"""The agent as a process against the real server (gunicorn; SQLite and PostgreSQL)."""

from __future__ import annotations

import secrets
import time
from datetime import datetime

import pytest

from tests.processes import START_TIMEOUT_S, Gunicorn, LoggedProcess, start_agent

pytestmark = pytest.mark.integration


def wait_for_points(server: Gunicorn, host: str, name: str, **params: str) -> list[dict]:
    """The points of a series, polled until there are some (or the start timeout)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        points = list(server.query(host, name, **params)["points"])
        if points or time.monotonic() > deadline:
            return points
        time.sleep(0.5)


def stop(agent: LoggedProcess) -> int:
    return agent.terminate(timeout=30)


def test_agent_metrics_arrive_and_are_queryable(gunicorn):
    host = f"it-{secrets.token_hex(4)}"
    agent = start_agent(gunicorn.url, AGENT_HOST=host, AGENT_LABELS="env=ci")
    try:
        assert agent.wait_for("agent started"), agent.output
        assert wait_for_points(gunicorn, host, "mem.used_pct"), agent.output
        total = wait_for_points(gunicorn, host, "cpu.usage_pct", label="core:total")
        assert total and all(0 <= p["value"] <= 100 for p in total)
        assert wait_for_points(gunicorn, host, "cpu.usage_pct", label="core:0")
        assert wait_for_points(gunicorn, host, "load.avg_1m", label="env:ci")
        assert wait_for_points(gunicorn, host, "disk.used_pct", label="mount:/")
        assert wait_for_points(gunicorn, host, "system.process_count")
    finally:
        status = stop(agent)
    assert status == 0, agent.output
    assert "0 lost" in agent.output
    assert "WARNING" not in agent.output, agent.output


def test_sigterm_while_the_server_is_down_exits_0_within_the_drain_bound(gunicorn):
    host = f"it-{secrets.token_hex(4)}"
    agent = start_agent(gunicorn.url, AGENT_HOST=host, SHUTDOWN_TIMEOUT="2s")
    try:
        assert wait_for_points(gunicorn, host, "mem.used_pct"), agent.output
        gunicorn.terminate()
        assert agent.wait_for("not sent"), agent.output
    finally:
        status = stop(agent)
    assert status == 0, agent.output
    assert "not delivered (drain bound 2s)" in agent.output
    assert "Traceback" not in agent.output
    # The drain bound (2 s) plus the grace for a request in flight, with slack for a busy CI.
    assert logged_at(agent, "agent stopped") - logged_at(agent, "stopping:") <= 2 + 1 + 2


def logged_at(agent: LoggedProcess, text: str) -> float:
    """The time stamp of the first log line containing ``text``, in seconds."""
    line = next(line for line in agent.lines if text in line)
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
