"""Agent spool under a server outage: nothing lost, RSS within 5 MB of normal (issue 11).

Runs a real agent (``python -m miniobserv.agent``, ``COLLECT_INTERVAL=1s``, ``SPOOL_DIR`` on)
against an in-process stub server (:mod:`miniobserv.stubserver`) and:

1. normal: the stub answers 202 for ``--normal-seconds``; the agent's VmRSS at the end is
   the baseline;
2. outage: the stub answers 503 (what ``STUB_STATUS=503`` does) for ``--minutes``; VmRSS is
   sampled every 5 s, and the spool file's rows counted;
3. recovery: the stub answers 202 again until the spool is empty, then the agent gets
   SIGTERM.

It reports the batches the stub acknowledged (each ``batch_id`` counted: a duplicate would
show), the batches the agent made (one per second of collection, from its counters), the
agent's drop counters, and RSS: baseline, highest during the outage, VmHWM.

    python benchmarks/agent_spool_outage.py                # 3 minutes of outage
    python benchmarks/agent_spool_outage.py --minutes 30   # the issue's real run
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from miniobserv.stubserver import StubSettings, make_server  # noqa: E402
from tests.integration.faultkit import spool_rows  # noqa: E402

STOPPED = re.compile(r"agent stopped: (\d+) batches sent, (\d+) dropped, (\d+) lost, "
                     r"drops: (.*)$", re.MULTILINE)


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def wait_for(text: str, log_path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log_path.read_text():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{text!r} not in the agent's log:\n{log_path.read_text()[-2000:]}")


def run(minutes: float, normal_s: float, workdir: Path) -> dict[str, object]:
    secret = secrets.token_urlsafe(32)
    settings = StubSettings(secret)
    server = make_server(settings, ("127.0.0.1", 0))
    threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()
    spool_dir, log_path = workdir / "spool", workdir / "agent.log"
    env = {**os.environ, "AGENT_TOKEN": secret, "COLLECT_INTERVAL": "1s",
           "SERVER_URL": f"http://127.0.0.1:{server.server_address[1]}",
           "SPOOL_DIR": str(spool_dir), "LOG_STATE_DIR": str(workdir / "state")}
    with log_path.open("w") as out:
        agent = subprocess.Popen([sys.executable, "-m", "miniobserv.agent"], env=env,
                                 cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for("agent started", log_path)
        time.sleep(normal_s)
        baseline_kb = status_kb(agent.pid, "VmRSS")
        settings.status = 503
        outage_end = time.monotonic() + minutes * 60
        peak_kb, rows = baseline_kb, 0
        while time.monotonic() < outage_end:
            time.sleep(min(5.0, max(0.0, outage_end - time.monotonic())))
            peak_kb = max(peak_kb, status_kb(agent.pid, "VmRSS"))
            rows = max(rows, spool_rows(spool_dir))
        settings.status = None
        recovered = time.monotonic()
        while spool_rows(spool_dir) and time.monotonic() - recovered < 3600:
            time.sleep(1.0)
            peak_kb = max(peak_kb, status_kb(agent.pid, "VmRSS"))
        replay_s = time.monotonic() - recovered
        time.sleep(2.0)
        hwm_kb = status_kb(agent.pid, "VmHWM")
        agent.send_signal(signal.SIGTERM)
        exit_status = agent.wait(60)
    finally:
        if agent.poll() is None:
            agent.kill()
        server.shutdown()
        server.server_close()
    stopped = STOPPED.search(log_path.read_text())
    if stopped is None:
        raise RuntimeError(f"no stop line:\n{log_path.read_text()[-2000:]}")
    acknowledged = sum(settings.accepted.values())
    return {
        "outage_min": minutes, "normal_s": normal_s, "interval_s": 1,
        "agent_sent": int(stopped.group(1)), "agent_dropped": int(stopped.group(2)),
        "agent_lost": int(stopped.group(3)), "drops": stopped.group(4),
        "acknowledged": acknowledged, "distinct_batch_ids": len(settings.accepted),
        "duplicates": acknowledged - len(settings.accepted),
        "spool_rows_peak": rows, "replay_s": round(replay_s, 1),
        "rss_normal_mb": round(baseline_kb / 1024, 1),
        "rss_outage_peak_mb": round(peak_kb / 1024, 1),
        "rss_growth_mb": round((peak_kb - baseline_kb) / 1024, 1),
        "vmhwm_mb": round(hwm_kb / 1024, 1), "exit_status": exit_status,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="outage length")
    parser.add_argument("--normal-seconds", type=float, default=30.0)
    args = parser.parse_args()
    logging.getLogger("miniobserv.stubserver").setLevel(logging.ERROR)  # one line per 503
    with tempfile.TemporaryDirectory() as tmp:
        figures = run(args.minutes, args.normal_seconds, Path(tmp))
    for key, value in figures.items():
        print(f"{key}: {value}")
    ok = (figures["agent_dropped"] == figures["agent_lost"] == figures["duplicates"] == 0
          and figures["drops"] == "none" and float(str(figures["rss_growth_mb"])) <= 5.0)
    print("result:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
