"""Log shipping: a real Tailer on real files, the runner, a real loopback HTTP server."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from miniobserv.agent.collectors import Registry
from miniobserv.agent.logship import LogShipper, is_full
from miniobserv.agent.logtail import MAX_CHUNK_BYTES, STATE_FILE, Checkpoint, Chunk, LogLine, Tailer
from miniobserv.agent.runner import Runner
from miniobserv.agent.sender import Sender
from miniobserv.config import AgentConfig
from miniobserv.errors import ConfigError
from tests.agent.helpers import SECRET, Received, Reply, ScriptedServer, free_port
from tests.agent.test_integration import logged_at
from tests.agent.test_runner import T0, Counting
from tests.processes import LoggedProcess, start_agent

WAIT_S = 20  # generous bound for things that happen within a poll or two


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LogShipper, "POLL_S", 0.02)


def wait_until(condition: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Site:
    """A log directory, a state directory and the runners that ship them to ``server``."""

    def __init__(self, root: Path, server: ScriptedServer) -> None:
        self.logs = root / "logs"
        self.logs.mkdir()
        self.state = root / "state"
        self.server = server
        self.runner: Runner | None = None

    @property
    def app(self) -> Path:
        return self.logs / "app.log"

    def start(self, *, shutdown_timeout: float = 10.0, prime: bool = True) -> Runner:
        """A runner with no metrics and a shipper of ``logs/*.log``, started.

        ``prime`` makes the first poll (the one that starts existing files at their end)
        before the start, so that lines written afterwards are all shipped; a restart does not
        prime, its first poll ships what was written while the agent was down.
        """
        tailer = Tailer([str(self.logs / "*.log")], self.state)
        if prime:
            assert not tailer.poll().lines
        sender = Sender(self.server.url, SECRET, timeout=5.0, rand=lambda: 0.5)
        sender.BASE_S, sender.CAP_S = 0.01, 0.05
        shipper = LogShipper("web-01", tailer, sender, interval=3600.0)
        self.runner = Runner("web-01", Registry([Counting(0)]), Sender(self.server.url, SECRET),
                             3600.0, shutdown_timeout, shipper)
        self.runner.start()
        return self.runner

    def stop(self) -> bool:
        assert self.runner is not None
        drained = self.runner.stop()
        assert not any(t.is_alive() for t in self.runner.threads)
        self.runner = None
        return drained

    def write(self, *lines: str, path: Path | None = None) -> None:
        with (path or self.app).open("a", encoding="utf-8") as out:
            out.writelines(line + "\n" for line in lines)

    def committed(self, path: Path | None = None) -> int:
        """The offset saved for ``path`` (by its inode), -1 when none is saved."""
        ino = (path or self.app).stat().st_ino
        state = json.loads((self.state / STATE_FILE).read_text())
        return next((f["offset"] for f in state["files"] if f["ino"] == ino), -1)


@pytest.fixture
def site(tmp_path: Path, server: ScriptedServer) -> Iterator[Site]:
    s = Site(tmp_path, server)
    yield s
    if s.runner is not None:
        s.runner.stop()


def log_requests(server: ScriptedServer) -> list[Received]:
    return [r for r in list(server.received) if r.path == "/api/v1/logs"]


def accepted_messages(server: ScriptedServer) -> list[str]:
    """Messages of the log batches answered 2xx, each batch_id counted once (server dedup)."""
    seen: set[str] = set()
    messages: list[str] = []
    for request in log_requests(server):
        if 200 <= request.status < 300 and request.body["batch_id"] not in seen:
            seen.add(request.body["batch_id"])
            messages += [e["message"] for e in request.body["entries"]]
    return messages


def numbered(first: int, last: int) -> list[str]:
    return [f"line {i:04d}" for i in range(first, last + 1)]


# --- the shipper on its own ------------------------------------------------------------------


def chunk_of(texts: list[str]) -> Chunk:
    return Chunk(tuple(LogLine("/a.log", t, "info", T0) for t in texts), Checkpoint(1, {}))


def test_a_chunk_is_full_at_1000_lines_or_at_the_byte_budget():
    assert not is_full(chunk_of(["x"] * 999))
    assert is_full(chunk_of(["x"] * 1000))
    assert not is_full(chunk_of(["x" * (MAX_CHUNK_BYTES - 1)]))
    assert is_full(chunk_of(["x" * (MAX_CHUNK_BYTES - 2), "é"]))  # bytes, not characters


def test_from_config_follows_log_paths_with_multiline_from_the_environment(tmp_path):
    env = {"SERVER_URL": "http://127.0.0.1:9", "AGENT_TOKEN": SECRET, "AGENT_HOST": "web-01",
           "LOG_PATHS": f"{tmp_path}/*.log", "LOG_STATE_DIR": str(tmp_path / "new" / "state"),
           "LOG_MULTILINE": "true", "COLLECT_INTERVAL": "5s"}
    runner = Runner.from_config(AgentConfig.from_env(env))
    assert runner.logs is not None
    assert runner.logs.tailer.multiline is True
    assert runner.logs.tailer.patterns == (f"{tmp_path}/*.log",)
    assert (tmp_path / "new" / "state").is_dir()  # created when missing
    assert runner.logs.outbox.sender.stop is runner.sender.stop  # one second signal stops both
    runner.logs.tailer.close()
    assert AgentConfig.from_env({**env, "LOG_MULTILINE": ""}).log_multiline is False
    without = Runner.from_config(AgentConfig.from_env({**env, "LOG_PATHS": ""}))
    assert without.logs is None


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_log_multiline_must_be_a_boolean(value):
    with pytest.raises(ConfigError, match="LOG_MULTILINE"):
        AgentConfig.from_env({"SERVER_URL": "http://x", "AGENT_TOKEN": SECRET,
                              "LOG_MULTILINE": value})


def test_an_unusable_state_dir_is_a_configuration_error_naming_it(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    config = AgentConfig("http://127.0.0.1:9", SECRET, "web-01", log_paths=("/x/*.log",),
                         log_state_dir=tmp_path / "file" / "state")
    with pytest.raises(ConfigError, match="LOG_STATE_DIR="):
        LogShipper.from_config(config, Sender("http://127.0.0.1:9", SECRET))


# --- end to end through the runner -----------------------------------------------------------


def test_lines_arrive_with_level_path_and_host_then_the_position_is_saved(site, caplog):
    site.app.write_text("")
    with caplog.at_level(logging.INFO, logger="miniobserv.agent"):
        site.start()
    site.write("2026-06-05T10:00:00Z ERROR disk full", "[WARN] slow query", "hello")
    assert wait_until(lambda: len(accepted_messages(site.server)) == 3)
    assert site.stop() is True
    [request] = log_requests(site.server)
    assert request.body["host"] == "web-01" and request.body["batch_id"]
    entries = request.body["entries"]
    assert [(e["level"], e["message"]) for e in entries] == [
        ("error", "2026-06-05T10:00:00Z ERROR disk full"), ("warn", "[WARN] slow query"),
        ("info", "hello")]
    assert entries[0]["time"] == "2026-06-05T10:00:00Z"  # the line's own time
    assert {e["path"] for e in entries} == {str(site.app)}
    assert site.committed() == site.app.stat().st_size
    assert f"log tailing started: patterns={site.logs}/*.log" in caplog.text


def test_503_then_202_delivers_once_and_commits_only_after_the_202(site):
    site.server.answer(503, 503, 202)
    site.app.write_text("")
    offsets_seen: list[int] = []
    site.server.on_request = lambda request: offsets_seen.append(site.committed())
    site.start()
    site.write(*numbered(1, 5))
    assert wait_until(lambda: accepted_messages(site.server) == numbered(1, 5))
    assert wait_until(lambda: site.committed() == site.app.stat().st_size)
    assert offsets_seen == [0, 0, 0]  # still 0 while the server handled the 202 itself
    assert len({r.body["batch_id"] for r in log_requests(site.server)}) == 1
    assert site.stop() is True


def test_a_permanent_400_is_logged_as_lost_and_committed_and_the_next_lines_go(site, caplog):
    site.server.answer(400)
    site.app.write_text("")
    with caplog.at_level(logging.WARNING):
        runner = site.start()
        site.write("refused line")
        assert wait_until(lambda: site.committed() == site.app.stat().st_size)
        site.write("next line")
        assert wait_until(lambda: accepted_messages(site.server) == ["next line"])
    assert site.stop() is True
    assert [r.status for r in log_requests(site.server)] == [400, 202]  # no retry loop
    assert f"1 lines from {site.app} lost" in caplog.text
    assert runner.logs is not None and runner.logs.lines_lost == 1


def test_a_restart_ships_every_line_once_across_downtime_and_a_rename_rotation(site):
    site.start()
    site.write(*numbered(1, 100))
    assert wait_until(lambda: len(accepted_messages(site.server)) == 100)
    assert site.stop() is True
    # While the agent is down: more lines, a rename rotation, lines in the new file.
    site.write(*numbered(101, 150))
    os.rename(site.app, site.logs / "app.log.1")
    site.write(*numbered(151, 200))
    site.start(prime=False)
    assert wait_until(lambda: len(accepted_messages(site.server)) >= 200)
    site.write(*numbered(201, 210))
    assert wait_until(lambda: len(accepted_messages(site.server)) >= 210)
    assert site.stop() is True
    assert accepted_messages(site.server) == numbered(1, 210)


def test_lines_not_acknowledged_at_shutdown_are_shipped_by_the_next_run(site, caplog):
    site.server.default = Reply(503)
    site.start(shutdown_timeout=0.3)
    site.write(*numbered(1, 20))
    assert wait_until(lambda: len(log_requests(site.server)) >= 2)
    with caplog.at_level(logging.WARNING):
        assert site.stop() is False
    assert "their lines will be read again at the next start" in caplog.text
    assert accepted_messages(site.server) == []
    site.server.default = Reply(202)
    site.start(prime=False)
    assert wait_until(lambda: accepted_messages(site.server) == numbered(1, 20))
    assert site.stop() is True


def test_a_full_queue_loses_nothing_the_files_are_the_buffer(site, monkeypatch):
    monkeypatch.setattr(LogShipper, "QUEUE_SIZE", 1)
    monkeypatch.setattr(LogShipper, "MAX_LINES", 10)
    site.server.default = Reply(503)
    runner = site.start()
    site.write(*numbered(1, 10))  # one chunk: the sender retries it, the queue fills behind
    assert wait_until(lambda: len(log_requests(site.server)) >= 3)
    for start in range(11, 500, 10):
        site.write(*numbered(start, start + 9))
    logs = runner.logs
    assert logs is not None
    assert wait_until(lambda: not logs.outbox.has_room())
    site.server.default = Reply(202)
    assert wait_until(lambda: len(accepted_messages(site.server)) >= 500)
    assert site.stop() is True
    messages = accepted_messages(site.server)
    assert messages == numbered(1, 500)
    assert all(len(r.body["entries"]) <= 10 for r in log_requests(site.server))


# --- the agent as a process against the stub server process ---------------------------------


def start_stub(**env: str) -> tuple[LoggedProcess, str]:
    port = free_port()
    stub = LoggedProcess([sys.executable, "-m", "miniobserv.stubserver"],
                         {"AGENT_TOKEN": SECRET, "LISTEN_ADDR": f"127.0.0.1:{port}", **env})
    assert stub.wait_for("stub server on"), stub.output
    return stub, f"http://127.0.0.1:{port}"


def start_log_agent(url: str, root: Path) -> LoggedProcess:
    agent = start_agent(url, AGENT_HOST="logs-01", LOG_PATHS=f"{root}/logs/*.log",
                        LOG_STATE_DIR=str(root / "state"), SHUTDOWN_TIMEOUT="2s")
    assert agent.wait_for("log tailing started"), agent.output
    return agent


@pytest.mark.integration
def test_agent_process_ships_lines_to_the_stub_and_sigterm_exits_0(tmp_path):
    (tmp_path / "logs").mkdir()
    app = tmp_path / "logs" / "app.log"
    app.write_text("written before the first start: not shipped\n")
    stub, url = start_stub()
    try:
        agent = start_log_agent(url, tmp_path)
        assert agent.wait_for(f"following log file {app} from its end"), agent.output
        app.open("a").write("".join(f"{line}\n" for line in numbered(1, 3)))
        assert stub.wait_for("from logs-01: 3 logs"), stub.output
        status = agent.terminate(timeout=30)
    finally:
        assert stub.terminate() == 0, stub.output
    assert status == 0, agent.output
    assert "log tailing stopped: 1 batches sent, 0 lines refused" in agent.output
    assert "WARNING" not in agent.output and "Traceback" not in agent.output


@pytest.mark.integration
def test_agent_process_stopped_during_an_outage_ships_the_lines_at_its_next_start(tmp_path):
    (tmp_path / "logs").mkdir()
    app = tmp_path / "logs" / "app.log"
    app.write_text("")
    down, down_url = start_stub(STUB_STATUS="503")
    try:
        agent = start_log_agent(down_url, tmp_path)
        assert agent.wait_for(f"following log file {app}"), agent.output
        app.open("a").write("".join(f"{line}\n" for line in numbered(1, 5)))
        assert agent.wait_for("log batch"), agent.output  # "… not sent (HTTP 503 …"
        status = agent.terminate(timeout=30)
    finally:
        down.terminate()
    assert status == 0, agent.output
    assert "their lines will be read again at the next start" in agent.output
    # The drain bound (2 s) plus the grace for a request in flight, with slack for a busy CI.
    assert logged_at(agent, "agent stopped") - logged_at(agent, "stopping:") <= 2 + 1 + 2
    up, up_url = start_stub()
    try:
        again = start_log_agent(up_url, tmp_path)
        assert up.wait_for("from logs-01: 5 logs"), up.output + again.output
        assert again.terminate(timeout=30) == 0, again.output
    finally:
        assert up.terminate() == 0, up.output
    assert "log tailing stopped: 1 batches sent" in again.output
