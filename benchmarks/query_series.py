"""One series' last 24 h in 1 m buckets, and the latest value of every host, A/B (issue 10).

The query part of ``fleet_compare.py`` alone, at the same size per series: ``--full-hosts``
hosts carry ``--steps`` steps of the nine metrics at 10 s (1111 steps: ~3.1 h, ~187 one-minute
buckets, as in the 10 M-point workload), the other ``--hosts`` only the last ``--recent``
steps (what ``latest`` reads). The points are written in-process (``insert_batch``) into a
throwaway PostgreSQL, then ANALYZEd (or a temp SQLite file with ``--store sqlite``); then one gunicorn worker
per code tree (this checkout, and ``--base DIR``, e.g. a ``git worktree`` of another commit,
imported through PYTHONPATH and cwd) answers the same two GETs, in alternating rounds of
``--round`` requests. Per tree: the median wall time of the client's requests and the
worker's and PostgreSQL's (postmaster and backends) CPU time per request (psutil, user +
system, summed over the ``--rounds`` rounds: its clock ticks are 10 ms).

    python benchmarks/query_series.py [--base /tmp/ab-query-base] [--store postgres]
                                      [--rounds 20] [--round 25] [--profile]

``--profile`` also runs cProfile over ``--round`` × ``--rounds`` series queries of this
checkout through Flask's test client (in this process) and prints the top functions. Run by
hand, never as a test.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fleet_compare import NINE, STEP_S, step_values  # noqa: E402
from benchmarks.ingest import STORES  # noqa: E402
from miniobserv.config import ServerConfig  # noqa: E402
from miniobserv.model import format_time, parse_metric_batch  # noqa: E402
from miniobserv.server.storage import open_repositories  # noqa: E402
from miniobserv.tokens import mint_token  # noqa: E402
from tests.agent.helpers import SECRET, free_port  # noqa: E402
from tests.processes import Gunicorn, LoggedProcess  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BATCH_STEPS = 100  # steps per batch (900 points)


def load(url: str, hosts: int, full_hosts: int, steps: int, recent: int, newest: int) -> int:
    """Write the workload through the store's own ``insert_batch``; return the points."""
    config = ServerConfig.from_env({"DATABASE_URL": url, "AGENT_TOKEN": SECRET})
    repos = open_repositories(config)
    written = 0
    try:
        for host in range(hosts):
            count = steps if host < full_hosts else recent
            for first in range(steps - count, steps, BATCH_STEPS):
                metrics = []
                for step in range(first, min(first + BATCH_STEPS, steps)):
                    stamp = format_time(datetime.fromtimestamp(
                        newest - (steps - 1 - step) * STEP_S, UTC))
                    for (name, labels), value in zip(NINE, step_values(host, step), strict=True):
                        metrics.append({"time": stamp, "host": f"host-{host:05d}", "name": name,
                                        "value": value, **({"labels": labels} if labels else {})})
                batch = parse_metric_batch({"host": f"host-{host:05d}", "metrics": metrics})
                written += repos.metrics.insert_batch(batch)
    finally:
        repos.close()
    if url.startswith("postgresql"):  # the statistics autovacuum gives a long-running store
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
    return written


class OneWorker(Gunicorn):
    """The README's gunicorn (its config file, threaded workers with keep-alive, as in
    fleet_compare.py) with one worker, importing the code of ``tree`` (cwd and PYTHONPATH:
    ``python -m`` puts the working directory first on sys.path)."""

    def __init__(self, database_url: str, tree: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = ["-c", "python:miniobserv.server.gunicorn_conf"] \
            if (tree / "miniobserv" / "server" / "gunicorn_conf.py").exists() else []
        LoggedProcess.__init__(
            self, [sys.executable, "-m", "gunicorn", *config, "-w", "1", "-b",
                   f"127.0.0.1:{self.port}", "miniobserv.server.wsgi:app"],
            {"DATABASE_URL": database_url, "AGENT_TOKEN": SECRET, "LOG_LEVEL": "WARNING",
             "PYTHONPATH": str(tree)}, cwd=tree)


def worker_pid(server: Gunicorn) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        kids = psutil.Process(server.proc.pid).children()
        if kids:
            return kids[0].pid
        time.sleep(0.1)
    raise SystemExit("gunicorn has no worker")


def cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def tree_cpu_s(pid: int | None) -> float:
    """CPU seconds of ``pid`` and its children (PostgreSQL's postmaster and backends)."""
    if pid is None:
        return 0.0
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children()]:
        try:
            total += cpu_s(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return total


def queries(newest: int) -> dict[str, tuple[str, dict[str, str]]]:
    end = datetime.fromtimestamp(newest + 60, UTC)
    return {
        "series": ("/api/v1/metrics/query",
                   {"host": "host-00000", "name": "cpu.usage_pct", "label": "core:total",
                    "from": format_time(end - timedelta(hours=24)), "to": format_time(end),
                    "bucket": "1m", "agg": "avg"}),
        "latest": ("/api/v1/metrics/latest", {"name": "cpu.usage_pct", "label": "core:total"}),
    }


def round_of(session: requests.Session, url: str, params: dict[str, str], pid: int,
             runs: int, db_pid: int | None = None) -> tuple[list[float], float, float, bytes]:
    """``runs`` GETs: their wall milliseconds, the worker's and the database's CPU seconds,
    the last body."""
    walls, body = [], b""
    before, db_before = cpu_s(pid), tree_cpu_s(db_pid)
    for _ in range(runs):
        began = time.perf_counter()
        response = session.get(url, params=params, timeout=30)
        walls.append((time.perf_counter() - began) * 1000)
        response.raise_for_status()
        body = response.content
    return walls, cpu_s(pid) - before, tree_cpu_s(db_pid) - db_before, body


def servers(url: str, trees: dict[str, Path], stack: ExitStack) -> Iterator[tuple[str, str, int]]:
    for label, tree in trees.items():
        server = OneWorker(url, tree)
        stack.callback(server.terminate)
        server.wait_ready()
        yield label, server.url, worker_pid(server)


def profile(url: str, newest: int, runs: int) -> None:
    from miniobserv.server.app import create_app

    config = ServerConfig.from_env({"DATABASE_URL": url, "AGENT_TOKEN": SECRET,
                                    "LOG_LEVEL": "WARNING"})
    client = create_app(config).test_client()
    path, params = queries(newest)["series"]
    headers = {"Authorization": f"Bearer {mint_token(SECRET, scope='read')}"}
    for _ in range(20):
        client.get(path, query_string=params, headers=headers)
    began = time.process_time()
    for _ in range(runs):
        client.get(path, query_string=params, headers=headers)
    print(f"\nin-process, no profiler: {(time.process_time() - began) * 1000 / runs:.3f} ms "
          "CPU per series query (client + server + database client side)")
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(runs):
        client.get(path, query_string=params, headers=headers)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", choices=sorted(STORES), default="postgres")
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--full-hosts", type=int, default=10)
    parser.add_argument("--steps", type=int, default=1111)
    parser.add_argument("--recent", type=int, default=12)
    parser.add_argument("--base", type=Path, help="another checkout to compare with")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--round", type=int, default=25)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    newest = int(time.time()) // STEP_S * STEP_S
    with ExitStack() as stack:
        store = stack.enter_context(STORES[args.store]())
        began = time.monotonic()
        points = load(store.url, args.hosts, args.full_hosts, args.steps, args.recent, newest)
        print(f"{store.version}: {points:,} points in {time.monotonic() - began:.0f} s",
              flush=True)
        if args.profile:
            profile(store.url, newest, args.rounds * args.round)
        trees = {"this": ROOT, **({"base": args.base.resolve()} if args.base else {})}
        running = list(servers(store.url, trees, stack))
        headers = {"Authorization": f"Bearer {mint_token(SECRET, scope='read')}"}
        # (query, tree) -> walls, [worker CPU s, database CPU s, requests]
        figures: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
        bodies: dict[tuple[str, str], bytes] = {}
        with requests.Session() as session:
            session.headers.update(headers)
            for name, (path, params) in queries(newest).items():
                for _label, base_url, pid in running:  # warm-up
                    round_of(session, base_url + path, params, pid, 20)
                for _ in range(args.rounds):
                    for label, base_url, pid in running:
                        walls, cpu, db_cpu, body = round_of(session, base_url + path, params,
                                                            pid, args.round, store.server_pid)
                        entry = figures.setdefault((name, label), ([], [0.0, 0.0, 0.0]))
                        entry[0].extend(walls)
                        entry[1][0] += cpu
                        entry[1][1] += db_cpu
                        entry[1][2] += args.round
                        bodies[(name, label)] = body
        print(f"\n{'query':8} {'tree':5} {'wall median ms':>15} {'worker CPU ms/req':>18} "
              f"{'PostgreSQL CPU ms/req':>22} {'bytes':>7}")
        for (name, label), (walls, (cpu, db_cpu, requests_)) in figures.items():
            print(f"{name:8} {label:5} {statistics.median(walls):15.2f} "
                  f"{cpu * 1000 / requests_:18.2f} {db_cpu * 1000 / requests_:22.2f} "
                  f"{len(bodies[(name, label)]):7}")
        for name in queries(newest):
            if (name, "base") in bodies:
                same = bodies[(name, "this")] == bodies[(name, "base")]
                print(f"{name}: answers {'identical' if same else 'DIFFER'}")


if __name__ == "__main__":
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    main()
