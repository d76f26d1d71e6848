"""``miniobserv serve``: requests in flight are counted, and SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from miniobserv.cli import InFlight

LIVENESS_S = 60  # a bound for a hung process, not a speed requirement


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return lambda data: None


def test_in_flight_counts_a_request_until_its_body_is_closed() -> None:
    in_flight = InFlight(lambda environ, respond: [b"ok"])
    body = in_flight({}, start_response)
    assert in_flight.count == 1
    assert in_flight.wait_idle(0) is False
    assert list(body) == [b"ok"]
    assert in_flight.count == 1  # the server has not closed it yet
    body.close()  # type: ignore[attr-defined]
    assert in_flight.count == 0 and in_flight.wait_idle(0) is True


def test_in_flight_forgets_a_request_whose_app_raised() -> None:
    def failing(environ: Any, respond: Any) -> list[bytes]:
        raise RuntimeError("boom")

    in_flight = InFlight(failing)
    with pytest.raises(RuntimeError):
        in_flight({}, start_response)
    assert in_flight.count == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_sigterm_stops_serve_with_status_0(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "AGENT_TOKEN": "0123456789abcdef",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "LISTEN_ADDR": f"127.0.0.1:{port}",
           "SHUTDOWN_TIMEOUT": "1s", "REQUEST_TIMEOUT": "1s"}
    process = subprocess.Popen([sys.executable, "-m", "miniobserv.cli", "serve"], env=env,
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout is not None
        assert "listening" in process.stdout.readline()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=LIVENESS_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "MiniObserv stopped" in out
    assert "Traceback" not in err
