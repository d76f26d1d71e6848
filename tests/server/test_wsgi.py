"""The gunicorn entry point: one line and a non-zero exit on bad configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import CONFIG_ARGS, Gunicorn

pytestmark = pytest.mark.integration  # starts Python and gunicorn processes

SECRET = "an-agent-token-of-32-characters!"
PROBE = ("from miniobserv.server.wsgi import app; "
         "print(app.test_client().get('/healthz').status_code)")


def run(code: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("AGENT_TOKEN", "DATABASE_URL", "MAX_BODY_BYTES", "LOG_LEVEL")}
    return subprocess.run([*args] if args else [sys.executable, "-c", code],
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_import_builds_the_app(tmp_path: Path) -> None:
    result = run(PROBE, {"AGENT_TOKEN": SECRET, "DATABASE_URL": f"sqlite:///{tmp_path}/w.db"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "200"
    assert SECRET not in result.stderr


@pytest.mark.parametrize(("env", "variable"), [
    ({}, "AGENT_TOKEN"),
    ({"AGENT_TOKEN": "short"}, "AGENT_TOKEN"),
    ({"AGENT_TOKEN": SECRET, "MAX_BODY_BYTES": "12"}, "MAX_BODY_BYTES"),
    ({"AGENT_TOKEN": SECRET, "LOG_LEVEL": "loud"}, "LOG_LEVEL"),
])
def test_config_error_is_one_line_without_traceback(env: dict[str, str],
                                                     variable: str) -> None:
    result = run(PROBE, env)
    assert result.returncode == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize("workers", ["1", "4"])
def test_gunicorn_with_the_config_file_stops_in_the_master(workers: str) -> None:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    result = run("", {}, str(gunicorn), *CONFIG_ARGS, "--bind", "127.0.0.1:0", "-w", workers,
                 "miniobserv.server.wsgi:app")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["miniobserv: AGENT_TOKEN is required"]


@pytest.mark.parametrize("workers", ["1", "4"])
def test_gunicorn_without_the_config_file_stops_instead_of_respawning(workers: str) -> None:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    for _ in range(2):  # several workers failing at once must not race gunicorn's halt
        result = run("", {}, str(gunicorn), "--bind", "127.0.0.1:0", "-w", workers,
                     "miniobserv.server.wsgi:app")
        assert result.returncode == 4
        assert result.stderr.count("miniobserv: AGENT_TOKEN is required") == 1
        assert "Traceback" not in result.stderr


def test_failed_starts_leave_one_marker_and_remove_those_of_earlier_masters(
        tmp_path: Path) -> None:
    """Without the config file: the first failing worker's marker, one per master."""
    gunicorn = Path(sys.executable).with_name("gunicorn")
    markers = []
    for _ in range(2):
        result = run("", {"TMPDIR": str(tmp_path)}, str(gunicorn), "--bind", "127.0.0.1:0",
                     "-w", "2", "miniobserv.server.wsgi:app")
        assert result.returncode == 4, result.stderr
        markers.append(sorted(p.name for p in tmp_path.glob("miniobserv-load-error-*")))
    assert len(markers[0]) == 1 and len(markers[1]) == 1
    assert markers[0] != markers[1]  # the second master's worker removed the first's


def test_workers_remove_the_counter_directories_of_exited_masters(tmp_path: Path) -> None:
    stale = tmp_path / "miniobserv-prometheus-4194303-99"  # no live process has this pid+start
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"x")
    server = Gunicorn(f"sqlite:///{tmp_path}/g.db", env={"TMPDIR": str(tmp_path)})
    try:
        server.wait_ready()
        assert not stale.exists()
        [live] = tmp_path.glob("miniobserv-prometheus-*")
        assert live.name.startswith(f"miniobserv-prometheus-{server.proc.pid}-")
    finally:
        server.terminate()
