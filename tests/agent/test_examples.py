"""examples/: the curl quick start really runs; the systemd unit is valid and hardened."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent.helpers import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
UNIT = EXAMPLES / "miniobserv-agent.service"


def unit_sections() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_runs_the_agent_from_an_environment_file_and_drains_on_stop():
    service = unit_sections()["Service"]
    assert service["ExecStart"].endswith("-m miniobserv.agent")
    assert service["EnvironmentFile"] == "/etc/miniobserv/agent.env"
    assert service["KillSignal"] == "SIGTERM"
    assert service["RestartPreventExitStatus"] == "2"  # configuration errors
    for directive in ("DynamicUser", "NoNewPrivileges", "PrivateTmp", "PrivateDevices",
                      "ProtectKernelTunables", "RestrictSUIDSGID"):
        assert service[directive] == "yes", directive
    assert service["ProtectSystem"] == "strict"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/miniobserv/bin/python", sys.executable))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""


@pytest.mark.integration
def test_quickstart_runs_end_to_end_against_miniobserv_serve():
    done = subprocess.run(["bash", str(EXAMPLES / "quickstart.sh")], capture_output=True,
                          text=True, timeout=300,
                          env={**_env(), "LISTEN_ADDR": f"127.0.0.1:{free_port()}",
                               "PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout + done.stderr
    assert '{"ingested":1}' in done.stdout
    assert "without a token: HTTP 401" in done.stdout and '{"hosts":[]}' in done.stdout
    assert re.search(r"^Dashboard: http://127\.0\.0\.1:\d+/#token=…$", done.stdout, re.M)
    assert '"value":42.5' in done.stdout
    assert "HTTP 400" in done.stdout and "metrics[0].name" in done.stdout
    assert "0 lost" in done.stdout


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("AGENT_TOKEN", "DATABASE_URL")}
