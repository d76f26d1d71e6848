"""The runner: bounded queue, newest batch dropped when full, bounded drain on shutdown."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import pytest

from miniobserv.agent.collectors import Registry
from miniobserv.agent.runner import Runner, split_batches
from miniobserv.agent.sender import Batch, Sender, SendResult
from miniobserv.model import MAX_BATCH, LogBatch, LogEntry, Metric, MetricBatch
from tests.agent.helpers import SECRET, Reply, free_port

T0 = datetime(2026, 6, 5, 10, 0, 0, tzinfo=UTC)


def metrics(n: int) -> list[Metric]:
    return [Metric(T0, "web-01", "mem.used_pct", float(i)) for i in range(n)]


class Counting:
    """A collector that reports ``n`` metrics and counts its passes."""

    name = "counting"

    def __init__(self, n: int = 1) -> None:
        self.n = n
        self.passes = 0
        self.collected = threading.Event()

    def collect(self) -> list[Metric]:
        self.passes += 1
        self.collected.set()
        return metrics(self.n)


def make_runner(url: str, collector: Counting | None = None, *, interval: float = 3600.0,
                shutdown_timeout: float = 10.0) -> Runner:
    sender = Sender(url, SECRET, timeout=5.0)
    return Runner("web-01", Registry([collector or Counting()]), sender, interval,
                  shutdown_timeout)


def first_pass_done(runner: Runner) -> bool:
    """Wait for the collector thread's first pass (it runs as soon as the runner starts)."""
    return all(c.collected.wait(10) for c in runner.registry.collectors
               if isinstance(c, Counting))


@pytest.mark.parametrize("count,sizes", [
    (0, []), (1, [1]), (MAX_BATCH, [MAX_BATCH]), (MAX_BATCH + 1, [MAX_BATCH, 1]),
    (2500, [1000, 1000, 500]),
])
def test_batches_hold_at_most_1000_metrics(count, sizes):
    batches = split_batches("web-01", metrics(count))
    assert [len(b.metrics) for b in batches] == sizes
    assert len({b.batch_id for b in batches}) == len(batches)
    assert [m for b in batches for m in b.metrics] == metrics(count)


def test_queue_full_drops_the_newest_batch_and_counts_it(caplog):
    runner = make_runner("http://127.0.0.1:9")
    batches = [MetricBatch("web-01", metrics(1)) for _ in range(Runner.QUEUE_SIZE + 2)]
    with caplog.at_level(logging.WARNING):
        accepted = [runner.enqueue(b) for b in batches]
    assert accepted == [True] * 10 + [False, False]
    assert runner.dropped == 2
    assert [item.batch for item in runner.queue.queue] == batches[:10]  # the oldest are kept
    assert caplog.text.count("queue full") == 2
    assert "2 dropped so far" in caplog.text


def test_one_pass_enqueues_split_batches():
    runner = make_runner("http://127.0.0.1:9", Counting(2001))
    assert runner.collect_once() == 3
    assert [len(item.batch.metrics) for item in runner.queue.queue] == [1000, 1000, 1]


def test_runs_collects_sends_and_stops_with_no_thread_left(server):
    collector = Counting(3)
    runner = make_runner(server.url, collector)
    runner.start()
    assert server.arrived.wait(10)
    assert runner.stop() is True
    assert not any(thread.is_alive() for thread in runner.threads)
    assert collector.passes == 1  # the hour-long interval was cut short, no second pass
    assert runner.sent == 1 and runner.lost == 0
    [request] = server.received
    assert request.body["host"] == "web-01" and len(request.body["metrics"]) == 3


def test_shutdown_drains_the_queued_batches(server):
    runner = make_runner(server.url)
    queued = [MetricBatch("web-01", metrics(1), batch.batch_id)
              for batch in split_batches("web-01", metrics(5), size=1)]
    for batch in queued:
        runner.enqueue(batch)
    runner.start()
    assert runner.stop() is True
    received = {r.body["batch_id"] for r in server.received}
    assert {str(b.batch_id) for b in queued} <= received
    assert runner.lost == 0 and runner.queue.qsize() == 0


def test_drain_is_bounded_when_the_server_is_down(caplog):
    runner = make_runner(f"http://127.0.0.1:{free_port()}", shutdown_timeout=0.5)
    for _ in range(4):
        runner.enqueue(MetricBatch("web-01", metrics(1)))
    runner.start()
    assert first_pass_done(runner)
    with caplog.at_level(logging.ERROR):
        drained = runner.stop()
    assert drained is False
    assert not any(thread.is_alive() for thread in runner.threads)
    assert runner.lost == 5 and runner.sent == 0  # four queued plus the first pass
    assert "5 batches not delivered" in caplog.text


def test_drain_with_a_full_queue_still_ends():
    runner = make_runner(f"http://127.0.0.1:{free_port()}", shutdown_timeout=0.3)
    for _ in range(Runner.QUEUE_SIZE):
        runner.enqueue(MetricBatch("web-01", metrics(1)))
    runner.start()
    assert first_pass_done(runner)
    assert runner.stop() is False
    assert not any(thread.is_alive() for thread in runner.threads)
    # Ten queued plus the first pass's batch: each was either lost or dropped, none sent.
    assert runner.sent == 0
    assert runner.lost + runner.dropped == Runner.QUEUE_SIZE + 1
    assert runner.lost >= Runner.QUEUE_SIZE


class ExplodingOnce:
    """A sender with a bug on its first batch; the runner must keep going."""

    def __init__(self) -> None:
        self.server_url = "http://127.0.0.1:9"
        self.stop = threading.Event()
        self.deadline: float | None = None
        self.sent: list[Batch] = []

    def send(self, batch: Batch) -> SendResult:
        if not self.sent:
            self.sent.append(batch)
            raise RuntimeError("bug in the sender")
        self.sent.append(batch)
        return SendResult("sent", 1, 202)


def test_sender_thread_survives_an_exception(caplog):
    sender = ExplodingOnce()
    runner = Runner("web-01", Registry([Counting()]), sender, 3600.0, 5.0)
    runner.enqueue(MetricBatch("web-01", metrics(1)))
    with caplog.at_level(logging.ERROR):
        runner.start()
        assert first_pass_done(runner)
        assert runner.stop() is True
    assert len(sender.sent) == 2 and runner.sent == 1
    assert "sending a batch failed" in caplog.text


class Flaky:
    name = "flaky"

    def collect(self) -> list[Metric]:
        raise ValueError("boom")


def test_a_failing_collector_does_not_stop_the_pass(server):
    runner = Runner("web-01", Registry([Flaky(), Counting(2)]),
                    Sender(server.url, SECRET), 3600.0, 5.0)
    runner.start()
    assert first_pass_done(runner)
    runner.stop()
    assert len(server.received[0].body["metrics"]) == 2


def test_log_batches_share_the_queue_and_report_back_once_settled(server):
    server.answer(202, 400)
    runner = make_runner(server.url)
    settled: list[tuple[str, str]] = []
    for message in ("first", "second"):
        entry = LogEntry(T0, "web-01", "info", message)
        runner.enqueue(LogBatch("web-01", [entry]),
                       lambda result, m=message: settled.append((m, result.outcome)))
    assert runner.has_room()
    runner.start()
    assert runner.stop() is True
    assert settled == [("first", "sent"), ("second", "dropped")]
    assert [r.path for r in server.received][:2] == ["/api/v1/logs", "/api/v1/logs"]


def test_a_batch_left_unsent_at_shutdown_is_not_reported_as_settled(server):
    server.default = Reply(503)
    runner = make_runner(server.url, shutdown_timeout=0.3)
    settled: list[object] = []
    runner.enqueue(MetricBatch("web-01", metrics(1)), settled.append)
    runner.start()
    assert runner.stop() is False
    assert settled == [] and runner.lost >= 1


def test_has_room_is_false_once_the_queue_is_full():
    runner = make_runner("http://127.0.0.1:9")
    for _ in range(Runner.QUEUE_SIZE):
        assert runner.has_room()
        runner.enqueue(MetricBatch("web-01", metrics(1)))
    assert not runner.has_room()


def test_the_agents_very_first_batch_carries_cpu_total_and_every_core(server):
    import psutil

    from miniobserv.config import AgentConfig

    config = AgentConfig.from_env({"SERVER_URL": server.url, "AGENT_TOKEN": SECRET,
                                   "AGENT_HOST": "web-01"})
    runner = Runner.from_config(config)
    runner.start()
    try:
        assert server.arrived.wait(10)
    finally:
        runner.stop()
    first = server.received[0].body["metrics"]
    cores = sorted(m["labels"]["core"] for m in first if m["name"] == "cpu.usage_pct")
    expected = ["total"] + [str(i) for i in range(psutil.cpu_count())]
    assert cores == sorted(expected)
