"""``python -m miniobserv.agent``: configuration errors fail fast, in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from miniobserv.agent.__main__ import main
from tests.agent.helpers import free_port
from tests.processes import start_agent

GOOD = {"SERVER_URL": "http://127.0.0.1:9", "AGENT_TOKEN": "0123456789abcdef-secret"}


@pytest.mark.parametrize("env,variable", [
    ({"AGENT_TOKEN": GOOD["AGENT_TOKEN"]}, "SERVER_URL"),
    ({"SERVER_URL": "http://x"}, "AGENT_TOKEN"),
    ({**GOOD, "AGENT_TOKEN": "short"}, "AGENT_TOKEN"),
    ({**GOOD, "SERVER_URL": "ftp://x"}, "SERVER_URL"),
    ({**GOOD, "COLLECT_INTERVAL": "0s"}, "COLLECT_INTERVAL=0s is out of bounds: 1s to 5m"),
    ({**GOOD, "COLLECT_INTERVAL": "301s"}, "COLLECT_INTERVAL"),
    ({**GOOD, "SHUTDOWN_TIMEOUT": "ten"}, "SHUTDOWN_TIMEOUT"),
    ({**GOOD, "AGENT_LABELS": "env"}, "AGENT_LABELS"),
    ({**GOOD, "AGENT_LABELS": ",".join(f"k{i}=v" for i in range(16))}, "AGENT_LABELS"),
])
def test_configuration_error_is_one_line_naming_the_variable(capsys, env, variable):
    assert main(env) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and variable in err
    assert "Traceback" not in err


def test_configuration_error_from_the_real_command_has_no_traceback():
    env = {k: v for k, v in os.environ.items() if k not in ("SERVER_URL", "AGENT_TOKEN")}
    done = subprocess.run([sys.executable, "-m", "miniobserv.agent"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "miniobserv agent: configuration error: SERVER_URL is required"]


@pytest.mark.integration
def test_a_second_signal_cuts_a_long_drain_short():
    agent = start_agent(f"http://127.0.0.1:{free_port()}", SHUTDOWN_TIMEOUT="120s")
    try:
        assert agent.wait_for("not sent"), agent.output
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.wait_for("stopping: draining"), agent.output
    finally:
        status = agent.terminate()  # the second SIGTERM
    assert status == 0, agent.output
    assert "second SIGTERM: giving up the drain" in agent.output
    assert "not delivered (drain bound 120s)" in agent.output


@pytest.mark.parametrize("load", ["import miniobserv.agent.__main__ as m; m.load_runner()",
                                  "import miniobserv.stubserver"])
def test_agent_and_stub_never_import_the_server(load):
    code = (f"import sys; {load}; "
            "print(sorted(m for m in sys.modules if m.startswith('miniobserv.server')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_agent_does_not_import_marshmallow():
    """The wire schemas live in miniobserv.schemas; the agent only needs the records."""
    code = ("import sys, miniobserv.agent.__main__ as m; m.load_runner(); "
            "import miniobserv.agent.logship; print('marshmallow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


LEAN_IMPORT_CHECK = """
import sys
from miniobserv.agent.__main__ import UNUSED_OPTIONAL_IMPORTS, load_runner
load_runner()
import miniobserv.agent.logship
print(sorted(name for name in UNUSED_OPTIONAL_IMPORTS if name in sys.modules))

import jwt, requests
from miniobserv.tokens import mint_token
print(requests.compat.chardet, jwt.algorithms.has_crypto)
claims = jwt.decode(mint_token("s" * 32, scope="ingest", subject="web-1"), "s" * 32,
                    algorithms=["HS256"])
print(claims["scope"], claims["sub"])
body = requests.models.Response()
body._content = "grüße".encode()
print(body.text)

import charset_normalizer, cryptography  # the block is gone: later imports work
print(sorted(name for name, module in sys.modules.items() if module is None
             and name.split(".")[0] in UNUSED_OPTIONAL_IMPORTS))
"""


def test_the_agent_leaves_out_the_optional_imports_it_never_uses():
    """No charset detection, no cryptography, no warning; HS256 tokens and UTF-8 bodies work."""
    done = subprocess.run([sys.executable, "-W", "error", "-c", LEAN_IMPORT_CHECK],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines() == ["[]", "None False", "ingest web-1", "grüße", "[]"]


def test_without_modules_leaves_imported_modules_alone():
    import json

    from miniobserv.agent.__main__ import without_modules

    with without_modules(("json", "miniobserv_no_such_module")):
        assert sys.modules["json"] is json
        with pytest.raises(ModuleNotFoundError):
            __import__("miniobserv_no_such_module")
    assert "miniobserv_no_such_module" not in sys.modules
    assert sys.modules["json"] is json
