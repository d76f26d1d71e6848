"""Per-request CPU of ingest in the server process: 1000-point gzip batches, in process.

The Flask app (``create_app`` with the real repositories) runs in this process on a fresh
store (benchmarks/ingest.py's: SQLite, or a throwaway PostgreSQL with default durability), and
Flask's test client POSTs the fleet workload's batches (benchmarks/fleet_compare.py's bodies:
nine metrics per step, one host per batch, a ``batch_id``) back to back with an ingest token.
No HTTP server and no client compete for the CPU, so the figure is the request's own cost in
the application: ``time.process_time()`` per request, median and quartiles over ``--batches``
requests after ``--warm`` of them. The database server's own CPU is not counted.

Each request's CPU is also split at ``MetricsRepository.insert_batch``: what is left is the
API and model side (body, gunzip, JSON, token, validation, the answer).

``--profile N`` then runs N more batches under cProfile and prints the functions with the
most cumulative and own time, as a percentage of the requests' time (where the time goes).
py-spy gives the same picture from outside: ``py-spy record -o out.svg -- python
benchmarks/ingest_profile.py ...``.

    python benchmarks/ingest_profile.py [--stores sqlite,postgres] [--batches 300] [--warm 30]
                                        [--profile 100]

Run by hand, never as a test.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fleet_compare import Workload, miniobserv_body  # noqa: E402
from benchmarks.ingest import STORES  # noqa: E402
from miniobserv.config import ServerConfig  # noqa: E402
from miniobserv.server.app import create_app  # noqa: E402
from miniobserv.tokens import mint_token  # noqa: E402
from tests.agent.helpers import SECRET  # noqa: E402

HOSTS = 50
TOP = 18  # functions listed by --profile


def bodies(count: int) -> list[bytes]:
    """``count`` distinct 1000-point batches of the fleet workload (50 hosts)."""
    newest = int(time.time()) // 10 * 10
    workload = Workload(hosts=HOSTS, points=count * 1000, newest=newest)
    return [miniobserv_body(*workload.points_of(batch)) for batch in range(workload.batches)]


def run_store(name: str, args: argparse.Namespace) -> None:
    with ExitStack() as stack:
        store = stack.enter_context(STORES[name]())
        config = ServerConfig.from_env({"DATABASE_URL": store.url, "AGENT_TOKEN": SECRET,
                                        "AUTO_MIGRATE": "false", "LOG_LEVEL": "WARNING"})
        app = create_app(config)
        store_cpu = time_the_store(app.extensions["miniobserv"].metrics)
        client = app.test_client()
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip",
                   "Authorization": f"Bearer {mint_token(SECRET, scope='ingest')}"}
        payloads = bodies(args.warm + args.batches + args.profile)

        def post(body: bytes) -> tuple[float, float]:
            store_cpu.clear()
            before = time.process_time()
            response = client.post("/api/v1/metrics", data=body, headers=headers)
            used = time.process_time() - before
            if response.status_code != 202:
                sys.exit(f"{name}: {response.status_code} {response.get_data(as_text=True)}")
            return used, used - sum(store_cpu)

        for body in payloads[:args.warm]:
            post(body)
        cpu, app_cpu = zip(*(post(body) for body in payloads[args.warm:args.warm + args.batches]),
                           strict=True)
        q1, median, q3 = statistics.quantiles(cpu, n=4)
        print(f"{name} ({store.version}): CPU per 1000-point request, median {median * 1e3:.2f} "
              f"ms (quartiles {q1 * 1e3:.2f}-{q3 * 1e3:.2f}), of which outside insert_batch "
              f"{statistics.median(app_cpu) * 1e3:.2f} ms; {len(cpu)} requests, "
              f"{1000 / median:,.0f} points per CPU second")
        if args.profile:
            profile(post, payloads[args.warm + args.batches:])


def time_the_store(metrics: Any) -> list[float]:
    """Wrap ``metrics.insert_batch`` to record its CPU per call into the returned list."""
    spent: list[float] = []
    insert = metrics.insert_batch

    def timed(batch: Any) -> int:
        before = time.process_time()
        try:
            return int(insert(batch))
        finally:
            spent.append(time.process_time() - before)

    metrics.insert_batch = timed
    return spent


def profile(post: Callable[[bytes], object], payloads: list[bytes]) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for body in payloads:
        post(body)
    profiler.disable()
    for key in ("cumulative", "tottime"):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
        rows = sorted(stats.stats.items(),  # type: ignore[attr-defined]
                      key=lambda kv: kv[1][3 if key == "cumulative" else 2], reverse=True)
        print(f"  top by {key} time (% of the profiled requests' time):")
        for (path, line, func), (_cc, _nc, tt, ct, _callers) in rows[:TOP]:
            spent = ct if key == "cumulative" else tt
            where = f"{Path(path).name}:{line}" if line else path
            print(f"    {100 * spent / total:5.1f}%  {func}  ({where})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--warm", type=int, default=30)
    parser.add_argument("--profile", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    for name in args.stores.split(","):
        run_store(name.strip(), args)


if __name__ == "__main__":
    main()
