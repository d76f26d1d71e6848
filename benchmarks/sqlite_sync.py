"""The cost of ``synchronous=FULL`` on SQLite: the store's own write path, NORMAL vs FULL.

Each round opens a fresh, migrated SQLite file with the server's repositories
(``SQLiteRepositories``), sets ``miniobserv.server.storage.sqlite.db.SYNCHRONOUS`` to NORMAL or
FULL, and has K threads (gunicorn's workers share one file the same way) insert the agent's
60-metric collections (``benchmarks/ingest.py``'s ``collection``), each with a ``batch_id``,
back to back for ``--seconds``: one ``BEGIN IMMEDIATE`` ... ``COMMIT`` per batch, as
``POST /api/v1/metrics`` does before it answers 202. The two settings alternate, round after
round, in the same run on the same disk, so a noisy neighbour hits both alike; it prints each
round's batches/s and commit latency p50/p99, then the medians and the FULL/NORMAL ratio.

No HTTP: this isolates the commit; over HTTP each request adds about 2.3 ms of CPU
(BENCHMARKS.md), which dilutes the ratio. Run by hand, never as a test.

    python benchmarks/sqlite_sync.py [--rounds 5] [--seconds 5] [--threads 1,4] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import collection, percentile  # noqa: E402

from miniobserv.model import Metric, MetricBatch, parse_time  # noqa: E402
from miniobserv.server.storage import migrate, sqlite  # noqa: E402
from miniobserv.server.storage.sqlite import db as sqlite_db  # noqa: E402

SETTINGS = ("NORMAL", "FULL")


def batch(host: str, at: datetime, rand: random.Random) -> MetricBatch:
    metrics = [Metric(parse_time(m["time"]), host, m["name"], m["value"], m.get("labels", {}))
               for m in collection(host, at, rand)]
    return MetricBatch(host, metrics, uuid.uuid4())


def run_round(directory: str, setting: str, threads: int,
              seconds: float) -> tuple[float, float, float, int]:
    """batches/s, p50 ms, p99 ms and rows stored of one round on a fresh file."""
    path = Path(tempfile.mkdtemp(dir=directory)) / "bench.db"
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    sqlite_db.SYNCHRONOUS = setting
    repos = sqlite.SQLiteRepositories(url)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    start = time.monotonic() + 0.2
    stop = start + seconds

    def sender(index: int) -> None:
        rand = random.Random(index)
        at = datetime.now(UTC)
        while time.monotonic() < start:
            time.sleep(0.001)
        while time.monotonic() < stop:
            at -= timedelta(seconds=10)
            one = batch(f"host-{index}", at, rand)
            began = time.perf_counter()
            repos.metrics.insert_batch(one)
            latencies[index].append((time.perf_counter() - began) * 1000)

    workers = [threading.Thread(target=sender, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    with repos.db.read() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == (2 if setting == "FULL" else 1)
        rows = int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])
    repos.close()
    every = sorted(ms for per in latencies for ms in per)
    return len(every) / seconds, percentile(every, 0.5), percentile(every, 0.99), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", default="1,4")
    parser.add_argument("--dir", default=tempfile.gettempdir(),
                        help="where the database files go (the disk under test)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        for threads in (int(t) for t in args.threads.split(",")):
            figures: dict[str, list[tuple[float, float, float, int]]] = {s: [] for s in SETTINGS}
            for round_no in range(args.rounds):
                for setting in SETTINGS if round_no % 2 == 0 else SETTINGS[::-1]:
                    result = run_round(directory, setting, threads, args.seconds)
                    figures[setting].append(result)
                    print(f"K={threads} round {round_no + 1} {setting:6} {result[0]:8.1f} "
                          f"batches/s  p50 {result[1]:6.2f} ms  p99 {result[2]:6.2f} ms  "
                          f"rows {result[3]}", flush=True)
            medians = {s: [statistics.median(r[i] for r in figures[s]) for i in range(3)]
                       for s in SETTINGS}
            for setting in SETTINGS:
                rate, p50, p99 = medians[setting]
                print(f"K={threads} median {setting:6} {rate:8.1f} batches/s  "
                      f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")
            print(f"K={threads} FULL/NORMAL: batches/s x{medians['FULL'][0] / medians['NORMAL'][0]:.2f}"
                  f", p50 x{medians['FULL'][1] / medians['NORMAL'][1]:.2f}", flush=True)


if __name__ == "__main__":
    main()
