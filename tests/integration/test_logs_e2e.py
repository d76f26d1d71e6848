"""Logs end to end: ``python -m miniobserv.agent`` with LOG_PATHS against gunicorn (issue 4).

On SQLite and on PostgreSQL: lines appended to a followed file reach
``/api/v1/logs/query`` with their level, path and time; the agent stopped, the file rotated by
rename and more lines written, the agent started again: every line arrives exactly once.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from miniobserv.model import parse_time
from miniobserv.tokens import mint_token
from tests.agent.helpers import SECRET
from tests.processes import START_TIMEOUT_S, Gunicorn, LoggedProcess, start_agent

pytestmark = pytest.mark.integration


def query_logs(server: Gunicorn, **params: str) -> dict[str, Any]:
    """One page of GET /api/v1/logs/query, with a read token."""
    headers = {"Authorization": f"Bearer {mint_token(SECRET, scope='read')}"}
    response = requests.get(server.url + "/api/v1/logs/query", params=params, headers=headers,
                            timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def all_entries(server: Gunicorn, host: str) -> list[dict[str, Any]]:
    """Every entry of ``host``, newest first, walking the pages by their cursor."""
    entries: list[dict[str, Any]] = []
    params = {"host": host, "limit": "100"}
    while True:
        page = query_logs(server, **params)
        entries += page["entries"]
        if page["next_cursor"] is None:
            return entries
        params["cursor"] = str(page["next_cursor"])


def wait_for_entries(server: Gunicorn, host: str, count: int,
                     agent: LoggedProcess) -> list[dict[str, Any]]:
    """The entries of ``host`` once there are at least ``count`` (or at the start timeout)."""
    deadline = time.monotonic() + START_TIMEOUT_S  # a liveness bound, not a speed requirement
    while True:
        entries = all_entries(server, host)
        if len(entries) >= count or time.monotonic() > deadline:
            assert len(entries) >= count, agent.output
            return entries
        time.sleep(0.3)


def append(path: Path, *lines: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def started_agent(server: Gunicorn, host: str, log_dir: Path, state: Path,
                  first: Path) -> LoggedProcess:
    """The agent following ``log_dir/*.log``, once its first poll has placed itself."""
    agent = start_agent(server.url, AGENT_HOST=host, LOG_PATHS=f"{log_dir}/*.log",
                        LOG_STATE_DIR=str(state))
    assert agent.wait_for(f"log file {first}"), agent.output  # "following" or "resuming"
    return agent


def stop(agent: LoggedProcess) -> None:
    status = agent.terminate(timeout=30)
    assert status == 0, agent.output
    assert "Traceback" not in agent.output, agent.output


def numbered(n: int) -> str:
    return f"order {n:04d} processed"


def test_lines_arrive_with_level_path_and_time_and_survive_a_rotation_while_stopped(
        gunicorn: Gunicorn, tmp_path: Path) -> None:
    host = f"logs-{secrets.token_hex(4)}"
    log_dir, state = tmp_path / "logs", tmp_path / "state"
    log_dir.mkdir()
    app = log_dir / "app.log"
    append(app, "written before the agent ever ran: not shipped")

    agent = started_agent(gunicorn, host, log_dir, state, app)
    try:
        before = datetime.now(UTC).replace(microsecond=0)
        append(app, "2026-06-05T10:00:00.250Z ERROR payment failed id=7",
               "[WARN] disk almost full", "level=debug msg=\"cache warmed\"",
               '{"severity":"error","msg":"json boom"}', "plain line, no level")
        entries = wait_for_entries(gunicorn, host, 5, agent)
        after = datetime.now(UTC)
        by_message = {e["message"]: e for e in entries}
        assert [e["message"] for e in entries] == [  # newest first
            "plain line, no level", '{"severity":"error","msg":"json boom"}',
            "level=debug msg=\"cache warmed\"", "[WARN] disk almost full",
            "2026-06-05T10:00:00.250Z ERROR payment failed id=7"]
        assert {m: e["level"] for m, e in by_message.items()} == {
            "2026-06-05T10:00:00.250Z ERROR payment failed id=7": "error",
            "[WARN] disk almost full": "warn", "level=debug msg=\"cache warmed\"": "debug",
            '{"severity":"error","msg":"json boom"}': "error", "plain line, no level": "info"}
        assert {e["path"] for e in entries} == {str(app)}
        own = by_message["2026-06-05T10:00:00.250Z ERROR payment failed id=7"]
        assert own["time"] == "2026-06-05T10:00:00.25Z"  # the line's own time
        for e in entries:
            if e is not own:  # the read time
                assert before <= parse_time(e["time"]) <= after
        found = query_logs(gunicorn, host=host, min_level="warn", q="DISK ALMOST")["entries"]
        assert [e["message"] for e in found] == ["[WARN] disk almost full"]

        append(app, *(numbered(n) for n in range(1, 101)))
        wait_for_entries(gunicorn, host, 105, agent)
    finally:
        stop(agent)

    # While the agent is down: more lines, a rename rotation, a new file, more lines.
    append(app, *(numbered(n) for n in range(101, 151)))
    app.rename(log_dir / "app.log.1")
    append(app, *(numbered(n) for n in range(151, 251)))

    agent = started_agent(gunicorn, host, log_dir, state, app)
    try:
        wait_for_entries(gunicorn, host, 255, agent)
        append(app, *(numbered(n) for n in range(251, 301)))  # and after the restart
        wait_for_entries(gunicorn, host, 305, agent)
    finally:
        stop(agent)

    entries = all_entries(gunicorn, host)  # the agent is stopped: nothing more arrives
    counts = Counter(e["message"] for e in entries)
    assert {m: c for m, c in counts.items() if c != 1} == {}, "lines shipped twice"
    expected = {numbered(n) for n in range(1, 301)}
    assert expected <= set(counts), sorted(expected - set(counts))[:10]
    assert len(entries) == 305
    assert "written before the agent ever ran: not shipped" not in counts
    shipped = [e for e in entries if e["message"] in expected]
    assert {e["path"] for e in shipped} == {str(app)}  # the name the lines were written under
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    # Within the one file, written order is arrival order.
    assert [e["message"] for e in reversed(shipped)] == [numbered(n) for n in range(1, 301)]
    assert timedelta(0) <= datetime.now(UTC) - parse_time(shipped[0]["time"]) < \
        timedelta(days=1)
