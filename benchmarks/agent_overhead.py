"""Agent overhead: CPU % of one core and peak RSS of ``python -m miniobserv.agent``.

Runs the stub server (``python -m miniobserv.stubserver``) and the agent against it, at a
10 s interval for 120 s by default, then reports:

- steady-state CPU: the agent's user+system CPU seconds from its "agent started" line to the
  end of the window, as a percent of one core over that wall time;
- CPU including start-up (interpreter and imports), over the whole run;
- peak RSS (``VmHWM``) and the batches the stub server received.

    python benchmarks/agent_overhead.py [--seconds 120] [--interval 10s]

Target (issue 3): at most 0.1 % of one core and 30 MB RSS in steady state.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

STARTED_LINE = "agent started"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def peak_rss_bytes(pid: int) -> int:
    """``VmHWM`` of a live process: the peak resident set size."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/<pid>/status")


def wait_for_line(path: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.01)
    raise RuntimeError(f"{text!r} never appeared in {path}:\n{path.read_text()}")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def run(seconds: float, interval: str, workdir: Path,
        python: str = sys.executable) -> dict[str, float]:
    """Start the stub and the agent, measure for ``seconds``, stop both."""
    secret = secrets.token_urlsafe(32)
    port = free_port()
    env = {**os.environ, "AGENT_TOKEN": secret, "PYTHONDONTWRITEBYTECODE": "1"}
    stub_log, agent_log = workdir / "stub.log", workdir / "agent.log"
    with stub_log.open("w") as out:
        stub = subprocess.Popen([sys.executable, "-m", "miniobserv.stubserver"],
                                env={**env, "LISTEN_ADDR": f"127.0.0.1:{port}"},
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_line(stub_log, "stub server on")
        with agent_log.open("w") as out:
            begin = time.monotonic()
            agent = subprocess.Popen(
                [python, "-m", "miniobserv.agent"],
                env={**env, "SERVER_URL": f"http://127.0.0.1:{port}",
                     "COLLECT_INTERVAL": interval},
                # Not the caller's directory: ``-m`` would import a source tree found there
                # instead of the package installed for ``python``.
                cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
        proc = psutil.Process(agent.pid)
        wait_for_line(agent_log, STARTED_LINE)
        started, cpu_at_start = time.monotonic(), cpu_seconds(proc)
        time.sleep(max(0.0, seconds - (started - begin)))
        ended, cpu_at_end = time.monotonic(), cpu_seconds(proc)
        rss = peak_rss_bytes(agent.pid)
        agent.send_signal(signal.SIGTERM)
        status = agent.wait(30)
    finally:
        stub.send_signal(signal.SIGTERM)
        stub.wait(30)
    batches = stub_log.read_text().count(" metrics")
    return {
        "steady_cpu_pct": (cpu_at_end - cpu_at_start) / (ended - started) * 100,
        "total_cpu_pct": cpu_at_end / (ended - begin) * 100,
        "startup_cpu_s": cpu_at_start,
        "wall_s": ended - begin,
        "peak_rss_mb": rss / 1024 / 1024,
        "batches": batches,
        "exit_status": status,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--interval", default="10s")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter of the agent, e.g. a venv with only `pip install .`")
    args = parser.parse_args()
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"agent-overhead-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    result = run(args.seconds, args.interval, workdir, args.python)
    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()}")
    print(f"agent interpreter: {args.python}")
    print(f"agent at a {args.interval} interval for {result['wall_s']:.0f} s against the stub "
          f"server: {result['batches']} batches received, exit status "
          f"{result['exit_status']}")
    print(f"CPU, steady state (after start-up): {result['steady_cpu_pct']:.3f} % of one core")
    print(f"CPU, whole run incl. start-up ({result['startup_cpu_s']:.2f} s CPU): "
          f"{result['total_cpu_pct']:.3f} % of one core")
    print(f"peak RSS: {result['peak_rss_mb']:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
