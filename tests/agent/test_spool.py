"""The durable spool: a full queue spools instead of dropping, replays oldest first, once."""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from miniobserv.agent.collectors import Registry
from miniobserv.agent.drops import DropCounters
from miniobserv.agent.outbox import Outbox
from miniobserv.agent.runner import Runner
from miniobserv.agent.sender import Batch, Sender, SendResult
from miniobserv.agent.spool import SPOOL_FILE, Spool, decode, encode
from miniobserv.model import Metric, MetricBatch
from miniobserv.stubserver import StubSettings, make_server
from tests.agent.helpers import SECRET

T0 = datetime(2026, 6, 5, 10, 0, 0, tzinfo=UTC)


def batch(i: int, n: int = 5) -> MetricBatch:
    return MetricBatch("web-01", [Metric(T0, "web-01", "mem.used_pct", float(i + k))
                                  for k in range(n)], uuid.uuid4())


class Counting:
    name = "counting"

    def __init__(self) -> None:
        self.passes = 0

    def collect(self) -> list[Metric]:
        self.passes += 1
        return [Metric(T0, "web-01", "mem.used_pct", float(self.passes))]


class Gate:
    """A sender that, while the gate is closed, waits (as a real sender retries a down
    server); once open it records each batch as stored."""

    server_url = "http://gate"

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.deadline: float | None = None
        self.up = threading.Event()
        self.stored: list[uuid.UUID] = []
        self.times: list[float] = []

    def send(self, b: Batch) -> SendResult:
        while not self.up.wait(0.01):
            if self.stop.is_set():
                return SendResult("aborted", 1)
        assert b.batch_id is not None
        self.stored.append(b.batch_id)
        self.times.append(time.monotonic())
        return SendResult("sent", 1, 202)


def wait_until(condition, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def stub() -> Iterator[tuple[StubSettings, str]]:
    settings = StubSettings(SECRET)
    server = make_server(settings, ("127.0.0.1", 0))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield settings, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# --- the spool itself ---------------------------------------------------------------------


def test_batches_come_back_oldest_first_with_their_batch_id_and_survive_a_reopen(tmp_path):
    batches = [batch(i) for i in range(3)]
    spool = Spool(tmp_path, 1 << 20)
    for b in batches:
        spool.push(b)
    spool.close()
    spool = Spool(tmp_path, 1 << 20)
    assert spool.count == 3
    out = []
    while (oldest := spool.peek()) is not None:
        out.append(oldest[1])
        spool.remove(oldest[0])
    assert out == batches
    assert spool.count == spool.bytes == 0


def test_when_full_the_oldest_are_dropped_and_counted_at_the_edge(tmp_path):
    batches = [batch(i) for i in range(4)]
    sizes = [len(encode(b)) for b in batches]
    spool = Spool(tmp_path, sum(sizes[:3]))  # exactly three fit
    assert [spool.push(b) for b in batches[:3]] == [0, 0, 0]
    assert spool.bytes == spool.max_bytes and spool.dropped == 0
    assert spool.push(batches[3]) >= 1  # one byte over: the oldest goes
    assert spool.dropped >= 1
    kept = []
    while (oldest := spool.peek()) is not None:
        kept.append(oldest[1].batch_id)
        spool.remove(oldest[0])
    assert kept == [b.batch_id for b in batches[spool.dropped:]]
    assert kept[-1] == batches[3].batch_id


def test_a_batch_larger_than_the_spool_is_dropped_itself(tmp_path):
    big = batch(0, n=200)
    spool = Spool(tmp_path, len(encode(big)) - 1)
    assert spool.push(big) == 1
    assert spool.count == 0 and spool.dropped == 1


# --- the outbox with a spool --------------------------------------------------------------


def test_a_full_queue_spools_and_counts_spool_full_drops(tmp_path, caplog):
    sender = Gate()
    drops = DropCounters()
    first = batch(0)
    spool = Spool(tmp_path, 3 * len(encode(first)))
    outbox = Outbox("sender", sender, 2, spool, drops)
    with caplog.at_level(logging.WARNING):
        assert all(outbox.offer(batch(i)) for i in range(2 + 5))
    assert outbox.queue.pending() == 2
    # about three fit (compressed sizes differ by a byte or two): the rest were dropped
    assert spool.count + drops.totals["spool_full"] == 5
    assert spool.count in (2, 3) and drops.totals["spool_full"] >= 2
    assert "spool full" in caplog.text


def test_server_down_then_up_loses_nothing_and_stores_each_batch_once(tmp_path, stub,
                                                                       monkeypatch):
    settings, url = stub
    settings.status = 503
    monkeypatch.setattr(Outbox, "REPLAY_PER_S", 200.0)
    sender = Sender(url, SECRET, timeout=5.0)
    sender.BASE_S = sender.CAP_S = 0.02
    sender.RETRY_AFTER_MAX_S = 0.02  # the stub's Retry-After: 1 would slow the test
    runner = Runner("web-01", Registry([Counting()]), sender, 3600.0, 5.0,
                    spool=Spool(tmp_path, 1 << 20))
    runner.outbox.start()
    for _ in range(40):
        runner.collect_once()
    assert runner.dropped == 0 and runner.outbox.spooled >= 40 - Runner.QUEUE_SIZE - 1
    settings.status = None
    assert wait_until(lambda: sum(settings.accepted.values()) >= 40)
    assert runner.stop()
    assert len(settings.accepted) == 40
    assert set(settings.accepted.values()) == {1}  # each batch_id stored once
    assert runner.outbox.spool is not None and runner.outbox.spool.count == 0


def test_replay_waits_for_a_success_then_goes_oldest_first_and_throttled(tmp_path,
                                                                         monkeypatch):
    monkeypatch.setattr(Outbox, "REPLAY_PER_S", 20.0)
    spool = Spool(tmp_path, 1 << 20)
    left = [batch(i) for i in range(6)]  # what the previous run spooled
    for b in left:
        spool.push(b)
    sender = Gate()
    runner = Runner("web-01", Registry([Counting()]), sender, 3600.0, 5.0, spool=spool)
    runner.outbox.start()
    time.sleep(0.3)
    assert sender.stored == []  # no live success yet: nothing replayed
    runner.collect_once()
    sender.up.set()
    assert wait_until(lambda: len(sender.stored) == 7)
    assert sender.stored[1:] == [b.batch_id for b in left]
    gaps = [b - a for a, b in zip(sender.times[1:], sender.times[2:], strict=False)]
    assert min(gaps) >= 1 / 20.0 * 0.9
    runner.stop()


def test_a_30_minute_outage_at_1s_loses_nothing(tmp_path, monkeypatch):
    """1800 passes (simulated time: collect_once driven directly) against a server that is
    down, then it recovers: all 1800 batches are stored, each once, none dropped."""
    monkeypatch.setattr(Outbox, "REPLAY_PER_S", 10_000.0)
    sender = Gate()
    runner = Runner("web-01", Registry([Counting()]), sender, 1.0, 5.0,
                    spool=Spool(tmp_path, 256 << 20))
    runner.outbox.start()
    produced = 0
    for _ in range(1800):
        produced += runner.collect_once()
    assert produced == 1800 and runner.dropped == 0
    assert runner.drops.total() == 0
    sender.up.set()
    assert wait_until(lambda: len(sender.stored) == 1800, timeout=60)
    assert runner.stop()
    assert len(set(sender.stored)) == 1800
    assert runner.outbox.spool is not None and runner.outbox.spool.count == 0


def test_batches_queued_past_the_drain_bound_are_spooled_and_replayed_at_the_next_start(
        tmp_path):
    sender = Gate()
    runner = Runner("web-01", Registry([Counting()]), sender, 3600.0, 0.2,
                    spool=Spool(tmp_path, 1 << 20))
    runner.outbox.start()
    for _ in range(5):
        runner.collect_once()
    runner.stop()  # the server stays down past the drain bound
    assert runner.lost == 0 and runner.drops.total() == 0
    again = Gate()
    again.up.set()
    second = Runner("web-01", Registry([Counting()]), again, 3600.0, 5.0,
                    spool=Spool(tmp_path, 1 << 20))
    assert second.outbox.spool is not None and second.outbox.spool.count == 5
    second.outbox.start()
    second.collect_once()  # a live success first, then the replay
    assert wait_until(lambda: len(again.stored) == 6)
    second.stop()


def spooled_ids(directory) -> list[str]:
    """The batch ids in a spool file, read as the next start would (every row decoded)."""
    spool = Spool(directory, 1 << 30)
    try:
        rows = spool._db.execute("SELECT kind, body FROM spool ORDER BY id").fetchall()
        return [str(decode(kind, body).batch_id) for kind, body in rows]
    finally:
        spool.close()


def test_kill_9_of_a_real_agent_then_a_restart_replays_every_intact_batch(tmp_path, stub):
    """The agent spools while the server answers 503, is killed with SIGKILL at whatever
    write it is doing, and a new agent on the same SPOOL_DIR replays what the file holds."""
    from tests.processes import SECRET as PROCESS_SECRET
    from tests.processes import start_agent

    settings, url = stub
    settings.secret = PROCESS_SECRET
    settings.status = 503
    env = {"SPOOL_DIR": str(tmp_path / "spool"), "LOG_STATE_DIR": str(tmp_path / "state")}
    agent = start_agent(url, **env)
    try:
        assert wait_until(lambda: (tmp_path / "spool" / SPOOL_FILE).exists()
                          and len(spooled_ids(tmp_path / "spool")) >= 3, timeout=60), \
            agent.output
        agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait(10)
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
    left = spooled_ids(tmp_path / "spool")  # a torn last write would be rolled back here
    assert len(left) >= 3 and len(set(left)) == len(left)
    settings.status = None
    again = start_agent(url, **env)
    try:
        assert wait_until(lambda: all(settings.accepted[i] for i in left), timeout=60), \
            again.output
    finally:
        assert again.terminate(timeout=30) == 0
    assert all(settings.accepted[i] == 1 for i in left)
    assert spooled_ids(tmp_path / "spool") == []
