"""Configuration errors of real processes: one line on stderr, no traceback (SPEC §5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SECRET = "0123456789abcdef"
HUGE = "99999999999999999999d"
RULE = {"host": "*", "name": "cpu.usage_pct", "op": ">", "threshold": 90, "for": "5m"}
HUGE_THRESHOLD = json.dumps([RULE]).replace('"threshold": 90', '"threshold": 1' + "0" * 400)


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {key: value for key, value in os.environ.items()
            if key not in ("AGENT_TOKEN", "SERVER_URL", "DATABASE_URL")}
    # The limit is a liveness bound for a hung process, not a speed requirement.
    return subprocess.run([sys.executable, *args], env={**base, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def assert_one_line(done: subprocess.CompletedProcess[str], status: int, start: str) -> None:
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert start in lines[0]


@pytest.mark.parametrize(("variable", "message"), [
    ("COLLECT_INTERVAL", f"COLLECT_INTERVAL={HUGE} is out of bounds: 1s to 5m"),
    ("REQUEST_TIMEOUT", f"REQUEST_TIMEOUT={HUGE} is out of bounds: 1s to 2m"),
])
def test_agent_exits_2_on_a_duration_past_every_bound(tmp_path: Path, variable: str,
                                                      message: str) -> None:
    env = {"SERVER_URL": "http://127.0.0.1:9", "AGENT_TOKEN": SECRET, variable: HUGE,
           "LOG_STATE_DIR": str(tmp_path)}
    assert_one_line(run(["-m", "miniobserv.agent"], env, tmp_path), 2, message)


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("METRICS_RETENTION", HUGE, f"METRICS_RETENTION={HUGE} is out of bounds: 1h to 3650d"),
    ("SHUTDOWN_TIMEOUT", "1" + "0" * 400 + "s", "SHUTDOWN_TIMEOUT=1" + "0" * 39 + "… is out of"),
    ("ALERT_RULES", HUGE_THRESHOLD, "ALERT_RULES[0].threshold: must be a finite number"),
    ("ALERT_RULES", "[" * 5000 + "]" * 5000, "ALERT_RULES is not valid JSON: nested too deeply"),
    ("DB_POOL_MIN", "9" * 5000, "DB_POOL_MIN='" + "9" * 40 + "…' is not an integer (0 to 100)"),
])
def test_serve_exits_2_on_a_bad_variable(tmp_path: Path, variable: str, value: str,
                                        message: str) -> None:
    env = {"AGENT_TOKEN": SECRET, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
           variable: value}
    done = run(["-m", "miniobserv.cli", "serve"], env, tmp_path)
    assert_one_line(done, 2, message)
    assert not (tmp_path / "x.db").exists()  # refused before touching the database
