"""A/B of the agent-shaped load between two source trees: batches/s and CPU per batch.

The agent-shaped window of ``benchmarks/fleet_compare.py`` (``benchmarks/ingest.py``'s
senders: 16 clients, 40-metric gzip batches with an ingest token and a ``batch_id``, keep-alive)
against the README's gunicorn command with 4 workers, once per tree and round, the trees
alternating (A B A B ...), each run on a fresh database of one throwaway PostgreSQL cluster
with default durability. gunicorn runs in the tree it tests (its working directory and
``PYTHONPATH``), so ``--base`` can be a worktree of another commit (``git worktree add
/tmp/ab-base <commit>``; never a copy or link of a virtualenv).

Wall-clock rates are noisy on a shared machine; the CPU seconds per batch of gunicorn's
processes (user + system from ``/proc``, summed over the master and its workers) and of the
database server are much less so. It prints every run, then the medians and B/A ratios.

    python benchmarks/agent_ab.py --base /tmp/ab-base [--new .] [--rounds 3] [--seconds 10]
                                  [--clients 16] [--size 40]

Run by hand, never as a test.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.ingest import Bench, DefaultSettingsCluster, Store, warm  # noqa: E402
from miniobserv.server.storage import migrate  # noqa: E402
from tests.agent.helpers import SECRET, free_port  # noqa: E402
from tests.conftest import find_pg_bindir, with_database  # noqa: E402
from tests.processes import Gunicorn, LoggedProcess  # noqa: E402

WORKERS = 4


class TreeServer(Gunicorn):
    """The README's gunicorn command with ``WORKERS`` workers, importing ``tree``'s code."""

    def __init__(self, database_url: str, tree: Path, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        LoggedProcess.__init__(
            self, [sys.executable, "-m", "gunicorn", "-c", "python:miniobserv.server.gunicorn_conf",
                   "-w", str(WORKERS), "-b", f"127.0.0.1:{port}", "miniobserv.server.wsgi:app"],
            {"DATABASE_URL": database_url, "AGENT_TOKEN": SECRET, "LOG_LEVEL": "WARNING",
             "PYTHONPATH": str(tree)}, cwd=tree)


@dataclass
class Run:
    tree: str
    batches_per_s: float
    p99_ms: float
    failures: int
    server_ms: float  # gunicorn CPU per batch
    db_ms: float  # database server CPU per batch
    clients_ms: float


def one_run(pool: ProcessPoolExecutor, server_url: str, cluster_pid: int, name: str,
            tree: Path, args: argparse.Namespace) -> Run:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    migrate.upgrade(url)
    with ExitStack() as stack:
        server = TreeServer(url, tree, free_port())
        stack.callback(server.terminate)
        server.wait_ready()
        store = Store("postgres", url, "", cluster_pid, lambda: 0)
        bench = Bench(pool, store, server)  # type: ignore[arg-type]
        bench.window(args.clients, args.size, 2.0)  # warm-up: series created, caches filled
        w = bench.window(args.clients, args.size, args.seconds)
    batches = max(w.batches, 1)
    return Run(str(tree), w.batches_per_s, w.p99_ms, sum(w.failures.values()),
               w.cpu_cores["gunicorn"] * w.seconds / batches * 1000,
               w.cpu_cores["database"] * w.seconds / batches * 1000,
               w.cpu_cores["clients"] * w.seconds / batches * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="tree A")
    parser.add_argument("--new", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="tree B (default: this one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--size", type=int, default=40)
    args = parser.parse_args()
    bindir = find_pg_bindir()
    if bindir is None:
        sys.exit("needs a local PostgreSQL 15")
    trees = {"A": args.base.resolve(), "B": args.new.resolve()}
    cluster = DefaultSettingsCluster(bindir, timescaledb=False)
    runs: dict[str, list[Run]] = {"A": [], "B": []}
    context = multiprocessing.get_context("spawn")
    try:
        server_url = cluster.start()
        cluster_pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
        with ProcessPoolExecutor(args.clients, mp_context=context) as pool:
            list(pool.map(warm, range(args.clients)))
            for index in range(args.rounds):
                for label in ("A", "B") if index % 2 == 0 else ("B", "A"):
                    run = one_run(pool, server_url, cluster_pid, f"ab_{index}_{label}",
                                  trees[label], args)
                    runs[label].append(run)
                    print(f"round {index + 1} {label}: {run.batches_per_s:7.1f} batches/s, "
                          f"p99 {run.p99_ms:6.1f} ms, failed {run.failures}, CPU per batch: "
                          f"gunicorn {run.server_ms:.2f} ms, database {run.db_ms:.2f} ms, "
                          f"clients {run.clients_ms:.2f} ms; load {os.getloadavg()[0]:.2f}",
                          flush=True)
    finally:
        cluster.destroy()
    print(f"\nmedians of {args.rounds} runs ({args.clients} clients x {args.size}-metric "
          f"batches, {args.seconds:.0f} s windows, gunicorn -w {WORKERS}):")
    medians = {label: {field: statistics.median(getattr(r, field) for r in runs[label])
                       for field in ("batches_per_s", "p99_ms", "server_ms", "db_ms",
                                     "clients_ms")} for label in runs}
    for label, tree in trees.items():
        m = medians[label]
        print(f"  {label} {tree}: {m['batches_per_s']:.1f} batches/s, p99 {m['p99_ms']:.1f} ms,"
              f" gunicorn {m['server_ms']:.2f} ms/batch, database {m['db_ms']:.2f} ms/batch,"
              f" clients {m['clients_ms']:.2f} ms/batch")
    a, b = medians["A"], medians["B"]
    print(f"  B/A: batches/s {b['batches_per_s'] / a['batches_per_s']:.2f}x, gunicorn CPU per "
          f"batch {b['server_ms'] / a['server_ms']:.2f}x, database CPU per batch "
          f"{b['db_ms'] / a['db_ms']:.2f}x")


if __name__ == "__main__":
    main()
