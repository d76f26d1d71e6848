"""Packed samples on plain PostgreSQL (``sample_blocks``, revision 0009; issue 10, storage
target 2): what packing moves and keeps, late points into packed windows, retention by whole
blocks, the maintenance job's call, and the migration up with data, down, up again.

The answers over packed data are checked against the reference for every bucket x aggregate
x label filter x ``group_by`` by the contract grid (its ``postgres-packed`` store); here each
answer is compared with the same store's answer before packing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import alembic.command
import psycopg
import pytest

from miniobserv.model import Metric, MetricBatch
from miniobserv.server.alerting.service import AlertingService
from miniobserv.server.storage import migrate, open_repositories
from miniobserv.server.storage.base import AGGREGATES, MetricQuery, Repositories, TopQuery
from miniobserv.server.storage.postgres import blocks
from tests.server.storage.conftest import config_for

pytestmark = pytest.mark.integration

NAME = "cpu.usage_pct"
HOSTS = ("web-01", "web-02")
# A block boundary a few days back; points every 7 s (not a divisor of 30 min) from before
# it, so that windows are cut mid-way and blocks hold points of both sides' windows.
BOUNDARY = blocks.pack_horizon(datetime.now(UTC) - timedelta(days=3))
FIRST = BOUNDARY - timedelta(hours=1, seconds=13)
STEP = timedelta(seconds=7)
STEPS = 1200  # about 2 h 20 min


@pytest.fixture
def plain_url(postgres_databases: Any) -> Iterator[str]:
    """A plain-PostgreSQL database at head (also where TimescaleDB exists)."""
    url = postgres_databases.create(timescaledb=False)
    yield url
    postgres_databases.drop(url)


@pytest.fixture
def repos(plain_url: str) -> Iterator[Repositories]:
    opened = open_repositories(config_for(plain_url))
    yield opened
    opened.close()


def points(host: str, count: int = STEPS, offset: float = 0.0) -> list[Metric]:
    return [Metric(FIRST + i * STEP, host, NAME, float(i % 97) + offset,
                   {"core": str(i % 2)}) for i in range(count)]


def floor10(time: datetime) -> datetime:
    """The start of the epoch-aligned 10 s bucket of ``time``."""
    return time - (time - datetime(1970, 1, 1, tzinfo=UTC)) % timedelta(seconds=10)


def load(repos: Repositories) -> None:
    for host in HOSTS:
        for start in range(0, STEPS, 500):
            repos.metrics.insert_batch(MetricBatch(host, points(host)[start:start + 500]))


def answers(repos: Repositories) -> list[Any]:
    """Every aggregate in 1m and 1h buckets, per host and fleet-wide, a label filter and
    group_by, count_series, top and latest: what packing must not change."""
    start, end = FIRST + timedelta(minutes=3, seconds=1), FIRST + STEPS * STEP
    out: list[Any] = []
    for agg, bucket in itertools.product(AGGREGATES, ("1m", "1h")):
        for host, group in (("web-01", None), (None, "host"), ("web-02", "core")):
            query = MetricQuery(host, NAME, start, end, bucket=bucket, agg=agg, group_by=group)
            out.append(repos.metrics.query(query))
            out.append(repos.metrics.count_series(query, 10))
        out.append(repos.metrics.query(MetricQuery(None, NAME, start, end, bucket=bucket,
                                                   agg=agg, labels=(("core", "1"),))))
        out.append(repos.metrics.top(TopQuery(NAME, start, end, agg=agg)))
    for since in (FIRST, BOUNDARY, end - timedelta(seconds=8), end):
        out.append(repos.fleet.latest(since))
    return out


def counts(url: str) -> tuple[int, int, int]:
    """Narrow rows, blocks, and the points in blocks."""
    with psycopg.connect(url) as conn:
        narrow = conn.execute("SELECT count(*) FROM samples").fetchone()
        packed = conn.execute("SELECT count(*), coalesce(sum(cardinality(times)), 0),"
                              " bool_and(cardinality(times) = cardinality(vals))"
                              " FROM sample_blocks").fetchone()
    assert narrow is not None and packed is not None and packed[2] in (True, None)
    return int(narrow[0]), int(packed[0]), int(packed[1])


def test_packing_moves_whole_windows_before_the_horizon_and_changes_no_answer(
        repos: Repositories, plain_url: str) -> None:
    load(repos)
    before = answers(repos)
    total = len(HOSTS) * STEPS
    # Horizon 1 µs past the boundary: its block is not yet complete, so only before it.
    packed = repos.fleet.pack_samples(BOUNDARY + timedelta(microseconds=1))
    older = sum(1 for m in points("web-01") if m.time < BOUNDARY) * len(HOSTS)
    assert 0 < packed == older < total
    narrow, block_count, in_blocks = counts(plain_url)
    assert (narrow, in_blocks) == (total - older, older)
    assert block_count == 2 * 2 * 3  # 2 hosts x 2 cores x the windows of 1 h 13 s before it
    assert answers(repos) == before
    assert repos.fleet.pack_samples(BOUNDARY) == 0  # nothing more before that horizon
    assert repos.fleet.pack_samples(datetime.now(UTC)) == total - older
    assert counts(plain_url)[0::2] == (0, total)
    assert answers(repos) == before


def test_late_points_into_packed_windows_win_and_are_merged(repos: Repositories,
                                                           plain_url: str) -> None:
    load(repos)
    repos.fleet.pack_samples(datetime.now(UTC))
    # Rewrite every 5th point of web-01 (a later write replaces the value) and add points
    # 1 µs after others, all into packed windows, as an unpacked store would take them.
    late = [replace(m, value=-m.value - 1) for m in points("web-01")[::5]] + \
        [replace(m, time=m.time + timedelta(microseconds=1), value=1e6)
         for m in points("web-01")[3::50]]
    repos.metrics.insert_batch(MetricBatch("web-01", late))
    assert counts(plain_url)[0] == len(late)
    with_late = answers(repos)
    # Each core's points are 14 s apart: "last" of its 10 s buckets is the value of its
    # newest point there, the rewritten one where rewritten, the one 1 µs later if any.
    stored = {(m.labels["core"], m.time): m.value for m in points("web-01")}
    stored.update({(m.labels["core"], m.time): m.value for m in late})
    expected: dict[tuple[str, datetime], tuple[datetime, float]] = {}
    for (core, time), value in stored.items():
        key = (core, floor10(time))
        if key not in expected or expected[key][0] < time:
            expected[key] = (time, value)
    got = repos.metrics.query(MetricQuery("web-01", NAME, FIRST, FIRST + STEPS * STEP,
                                          bucket="10s", agg="last", group_by="core"))
    assert {(s.labels["core"], p.time): p.value for s in got for p in s.points} == \
        {key: value for key, (_, value) in expected.items()}
    # The next packing merges them: nothing narrow is left and no answer changes.
    assert repos.fleet.pack_samples(datetime.now(UTC)) == len(late)
    narrow, _, in_blocks = counts(plain_url)
    assert (narrow, in_blocks) == (0, len(HOSTS) * STEPS + len(late) - len(points("web-01")[::5]))
    assert answers(repos) == with_late


def test_a_late_point_wins_in_latest(repos: Repositories) -> None:
    load(repos)
    repos.fleet.pack_samples(datetime.now(UTC))
    last = points("web-02")[-2:]  # the newest point of each core
    repos.metrics.insert_batch(MetricBatch("web-02", [replace(m, value=-5.0) for m in last]))
    newest = repos.fleet.latest(FIRST, host="web-02")
    assert [(v.time, v.value) for v in newest] == [(m.time, -5.0) for m in
                                                     sorted(last, key=lambda m: m.labels["core"])]
    # A narrow point older than the block's newest does not hide it.
    repos.metrics.insert_batch(MetricBatch("web-01", [replace(points("web-01")[10],
                                                              value=-7.0)]))
    assert {v.value for v in repos.fleet.latest(FIRST, host="web-01")} == \
        {m.value for m in points("web-01")[-2:]}


def test_retention_drops_whole_blocks_once_their_window_ended(repos: Repositories,
                                                              plain_url: str) -> None:
    load(repos)
    repos.fleet.pack_samples(datetime.now(UTC))
    far = datetime.now(UTC) + timedelta(days=1)
    _, block_count, in_blocks = counts(plain_url)
    # Mid-way through the boundary's window: the block holding it stays whole.
    repos.fleet.delete_expired(BOUNDARY + timedelta(minutes=10), far, far)
    _, left, points_left = counts(plain_url)
    assert left == block_count - 2 * 2 * 3  # the three windows wholly before the boundary
    every = MetricQuery("web-01", NAME, FIRST, FIRST + STEPS * STEP, bucket="10s", agg="min")
    oldest = min(p.time for s in repos.metrics.query(every) for p in s.points)
    assert oldest == floor10(min(m.time for m in points("web-01") if m.time >= BOUNDARY))
    # At the block's end exactly: it goes too (its window ended by then).
    repos.fleet.delete_expired(BOUNDARY + blocks.BLOCK, far, far)
    assert counts(plain_url)[1] == left - 2 * 2
    assert points_left < in_blocks


def test_packing_stops_between_batches_when_asked(plain_url: str, repos: Repositories) -> None:
    load(repos)
    asked = itertools.count()
    with psycopg.connect(plain_url, autocommit=True) as conn:
        packed = blocks.pack(conn, datetime.now(UTC), lambda: next(asked) >= 1, batch=1)
    assert packed == STEPS // 2  # the first series (one host's core 0) only
    assert counts(plain_url)[0] == len(HOSTS) * STEPS - STEPS // 2


def test_the_maintenance_job_packs_after_metrics_pack_after(plain_url: str) -> None:
    now = datetime.now(UTC)
    config = replace(config_for(plain_url), metrics_pack_after=timedelta(minutes=10))
    repos = open_repositories(config)
    try:
        recent = [Metric(now - timedelta(minutes=m), "web-01", NAME, float(m))
                  for m in range(0, 120, 5)]
        repos.metrics.insert_batch(MetricBatch("web-01", recent))
        service = AlertingService(config, repos)
        try:
            service.tick()  # takes the lead
            service.retention_tick()
        finally:
            service.stop()
    finally:
        repos.close()
    horizon = blocks.pack_horizon(now - timedelta(minutes=10))
    with psycopg.connect(plain_url) as conn:
        narrow = [row[0] for row in conn.execute("SELECT time FROM samples").fetchall()]
    assert narrow and all(time >= horizon for time in narrow)
    assert counts(plain_url)[2] == sum(1 for m in recent if m.time < horizon) > 0


@pytest.mark.timescaledb
def test_timescaledb_packs_nothing(timescale_url: str) -> None:
    repos = open_repositories(config_for(timescale_url))
    try:
        load(repos)
        assert repos.fleet.pack_samples(datetime.now(UTC)) == 0
    finally:
        repos.close()
    assert counts(timescale_url)[0:2] == (len(HOSTS) * STEPS, 0)


def test_downgrade_unpacks_every_block_and_upgrade_again(plain_url: str,
                                                         repos: Repositories) -> None:
    load(repos)
    repos.fleet.pack_samples(datetime.now(UTC))
    repos.metrics.insert_batch(MetricBatch("web-01", [replace(m, value=-1.0)
                                                      for m in points("web-01")[::7]]))
    expected = answers(repos)
    cfg = migrate.alembic_config(plain_url)
    cfg.attributes["move_batch"] = 1  # one series per statement
    alembic.command.downgrade(cfg, "0008")
    with psycopg.connect(plain_url) as conn:
        assert conn.execute("SELECT to_regclass('sample_blocks')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM samples").fetchone() == (len(HOSTS) * STEPS,)
    unpacked = open_repositories(config_for(plain_url))
    try:
        assert answers(unpacked) == expected
    finally:
        unpacked.close()
    migrate.upgrade(plain_url, timescaledb=False)
    again = open_repositories(config_for(plain_url))
    try:
        assert answers(again) == expected
        assert again.fleet.pack_samples(datetime.now(UTC)) == len(HOSTS) * STEPS
        assert answers(again) == expected
    finally:
        again.close()


def test_packing_leaves_the_work_to_a_process_already_packing(plain_url: str,
                                                              repos: Repositories) -> None:
    load(repos)
    with psycopg.connect(plain_url) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", (blocks.PACK_LOCK_KEY,))
        assert repos.fleet.pack_samples(datetime.now(UTC)) == 0
        other.rollback()
    assert repos.fleet.pack_samples(datetime.now(UTC)) == len(HOSTS) * STEPS


def test_a_backlog_is_packed_in_bounded_spans_of_time(plain_url: str, repos: Repositories,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    load(repos)
    monkeypatch.setattr(blocks, "PACK_SPAN", blocks.BLOCK)
    before = answers(repos)
    asked = itertools.count()
    with psycopg.connect(plain_url, autocommit=True) as conn:
        # One statement: the first series' first window only.
        packed = blocks.pack(conn, datetime.now(UTC), lambda: next(asked) >= 1, batch=1)
    first = [m for m in points("web-01") if m.labels["core"] == "0"]
    window_end = blocks.pack_horizon(FIRST) + blocks.BLOCK
    assert packed == sum(1 for m in first if m.time < window_end) > 0
    assert repos.fleet.pack_samples(datetime.now(UTC)) == len(HOSTS) * STEPS - packed
    assert counts(plain_url)[0::2] == (0, len(HOSTS) * STEPS)
    assert answers(repos) == before
