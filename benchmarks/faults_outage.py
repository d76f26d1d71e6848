"""A real agent through a long server outage, then a database outage (issue 11).

Starts a PostgreSQL cluster of its own with PostgreSQL's default durability (TimescaleDB when
installed), gunicorn with the shipped config (``-c python:miniobserv.server.gunicorn_conf``)
on it, and a real agent (``python -m miniobserv.agent``, ``COLLECT_INTERVAL=1s``,
``SPOOL_DIR`` on). Then:

1. normal: ``--normal-seconds`` of delivery;
2. server outage: gunicorn gets SIGTERM and stays down ``--minutes`` (default 5); the agent's
   VmRSS and its spool's rows are sampled every 5 s;
3. gunicorn is started again on the same port; the run waits until the agent caught up (its
   spool empty, its newest collection stored);
4. database outage: ``pg_ctl stop -m <--pg-mode>`` for ``--pg-seconds`` while gunicorn runs
   (it answers 503 with ``Retry-After``), then started again; caught up again;
5. the agent gets SIGTERM (drain bound 15 s) and reports its counters.

It reports the batches the agent made (sent + dropped + lost at shutdown + kept in its spool),
acknowledged (the agent's ``sent``: answers 2xx), stored (the ``batch_id`` claims in the
database, and the points of four metric names: each collection is one batch carrying each
once, so every count must equal the batches stored), and lost (made - stored).

    python benchmarks/faults_outage.py                    # 5-minute server outage, 60 s of PG
    python benchmarks/faults_outage.py --minutes 1 --pg-seconds 20   # a quick look

Run by hand, never as a test. Every process, cluster and temporary directory is removed.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.agent.helpers import free_port  # noqa: E402
from tests.conftest import ThrowawayCluster  # noqa: E402
from tests.integration.faultkit import (  # noqa: E402
    durable_database,
    point_counts,
    spool_rows,
    status_of,
)
from tests.processes import CONFIG_ARGS, Gunicorn, LoggedProcess, start_agent  # noqa: E402

HOST = "faults-bench"
NAMES = (("cpu.usage_pct", "core:total"), ("mem.used_pct", None), ("load.avg_1m", None),
         ("system.uptime_seconds", None))
STOPPED = re.compile(r"agent stopped: (\d+) batches sent, (\d+) dropped, (\d+) lost, "
                     r"drops: (.*)$", re.MULTILINE)
KEPT = re.compile(r"spool: (\d+) batches kept for the next start")
CATCH_UP_LIMIT_S = 1800.0


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


class Run:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.events: list[str] = []
        self.began = time.monotonic()
        self.since = datetime.now(UTC) - timedelta(minutes=1)
        self.rss_peak_kb = 0
        self.spool_peak = 0

    def note(self, text: str) -> None:
        line = f"{time.monotonic() - self.began:7.1f} s  {text}"
        self.events.append(line)
        print(line, flush=True)

    def sample(self, agent: LoggedProcess, seconds: float) -> None:
        """Wait ``seconds``, sampling the agent's VmRSS and spool rows every 5 s."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(min(5.0, max(0.0, end - time.monotonic())))
            self.rss_peak_kb = max(self.rss_peak_kb, status_kb(agent.proc.pid, "VmRSS"))
            self.spool_peak = max(self.spool_peak, spool_rows(self.workdir / "spool"))

    def caught_up(self, url: str) -> bool:
        if spool_rows(self.workdir / "spool"):
            return False
        try:
            times = point_counts(url, HOST, "mem.used_pct", self.since)
        except requests.RequestException:
            return False
        newest = max((datetime.fromisoformat(t.replace("Z", "+00:00")) for t in times),
                     default=None)
        return newest is not None and newest >= datetime.now(UTC) - timedelta(seconds=20)

    def wait_caught_up(self, url: str, agent: LoggedProcess, what: str) -> float:
        start = time.monotonic()
        while not self.caught_up(url):
            if time.monotonic() - start > CATCH_UP_LIMIT_S:
                raise RuntimeError(f"the agent never caught up after {what}")
            self.sample(agent, 2.0)
        took = time.monotonic() - start
        self.note(f"caught up after {what} in {took:.0f} s")
        return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="server outage")
    parser.add_argument("--pg-seconds", type=float, default=60.0, help="database outage")
    parser.add_argument("--pg-mode", default="immediate", choices=ThrowawayCluster.STOP_MODES)
    parser.add_argument("--normal-seconds", type=float, default=30.0)
    parser.add_argument("--no-timescaledb", action="store_true")
    args = parser.parse_args()
    servers: list[Gunicorn] = []
    with tempfile.TemporaryDirectory(prefix="miniobserv-faults-") as tmp, \
            durable_database("faults", not args.no_timescaledb) as database:
        try:
            figures = run(args, Path(tmp), database.cluster, database.url, servers)
            figures["store"] = database.version
        finally:
            for server in servers:
                if server.proc.poll() is None:
                    server.terminate()
    for key, value in figures.items():
        print(f"{key}: {value}")
    ok = figures["lost"] == 0 and figures["duplicates"] == 0 and figures["partial"] == 0
    print("result:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


def run(args: argparse.Namespace, workdir: Path, cluster: ThrowawayCluster, database_url: str,
        servers: list[Gunicorn]) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"LOG_LEVEL": "WARNING"}
    servers.append(Gunicorn(database_url, port=port, args=CONFIG_ARGS, env=env))
    servers[-1].wait_ready()
    state = Run(args, workdir)
    agent = start_agent(url, AGENT_HOST=HOST, SPOOL_DIR=str(workdir / "spool"),
                        LOG_STATE_DIR=str(workdir / "state"), SHUTDOWN_TIMEOUT="15s",
                        LOG_LEVEL="INFO")
    try:
        if not agent.wait_for("agent started"):
            raise RuntimeError(agent.output)
        state.note("agent started")
        state.sample(agent, args.normal_seconds)
        rss_normal_kb = status_kb(agent.proc.pid, "VmRSS")
        state.rss_peak_kb = rss_normal_kb

        state.note(f"server outage: SIGTERM to gunicorn for {args.minutes:g} min")
        servers[-1].terminate()
        state.sample(agent, args.minutes * 60)
        spool_after_server_outage = spool_rows(workdir / "spool")
        rss_outage_kb = state.rss_peak_kb
        servers.append(Gunicorn(database_url, port=port, args=CONFIG_ARGS, env=env))
        servers[-1].wait_ready()
        state.note(f"gunicorn started again ({spool_after_server_outage} batches spooled)")
        server_catch_up = state.wait_caught_up(url, agent, "the server outage")
        state.sample(agent, args.normal_seconds)

        state.note(f"database outage: pg_ctl stop -m {args.pg_mode} for {args.pg_seconds:g} s")
        cluster.stop_server(args.pg_mode)
        ready_down = status_of(url + "/readyz")
        state.sample(agent, args.pg_seconds)
        ready_still_down = status_of(url + "/readyz")
        cluster.start_server()
        state.note(f"PostgreSQL started again (/readyz while down: {ready_down}, "
                   f"{ready_still_down})")
        pg_catch_up = state.wait_caught_up(url, agent, "the database outage")
        state.sample(agent, 5.0)
        hwm_kb = status_kb(agent.proc.pid, "VmHWM")
        agent.proc.send_signal(signal.SIGTERM)
        exit_status = agent.proc.wait(60)
        agent.terminate()
        state.note(f"agent stopped (exit {exit_status})")
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
    stopped = STOPPED.search(agent.output)
    if stopped is None:
        raise RuntimeError(f"no stop line:\n{agent.output[-3000:]}")
    sent, dropped, lost_at_stop = (int(stopped.group(i)) for i in (1, 2, 3))
    kept = sum(int(k) for k in KEPT.findall(agent.output))
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM ingested_batches WHERE kind = 'metrics'"
                           ).fetchone()
    claims = int(row[0]) if row else 0
    points = {name: sum(point_counts(url, HOST, name, state.since, "1h", label).values())
              for name, label in NAMES}
    buckets = point_counts(url, HOST, "cpu.usage_pct", state.since, label="core:total")
    made = sent + dropped + lost_at_stop + kept
    return {
        "server_outage_s": args.minutes * 60, "pg_outage_s": args.pg_seconds,
        "pg_stop_mode": args.pg_mode, "interval_s": 1,
        "agent_ran_s": round(time.monotonic() - state.began),
        "made": made, "acknowledged": sent, "dropped": dropped, "lost_at_shutdown":
        lost_at_stop, "kept_in_spool": kept, "drops": stopped.group(4),
        "stored_batches": claims, "points_per_name": points,
        "lost": made - claims, "duplicates": max(points.values()) - claims,
        "partial": max(points.values()) - min(points.values()),
        "ten_second_buckets": len(buckets),
        "spool_rows_peak": state.spool_peak,
        "catch_up_after_server_outage_s": round(server_catch_up),
        "catch_up_after_pg_outage_s": round(pg_catch_up),
        "rss_normal_mb": round(rss_normal_kb / 1024, 1),
        "rss_outage_peak_mb": round(rss_outage_kb / 1024, 1),
        "rss_peak_mb": round(state.rss_peak_kb / 1024, 1), "vmhwm_mb": round(hwm_kb / 1024, 1),
        "agent_exit": exit_status,
        "server_errors": sum(line.count("Traceback") for line in
                             (s.output for s in servers)),
    }


if __name__ == "__main__":
    sys.exit(main())
