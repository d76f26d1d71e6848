"""Drop counters: logged once a minute while drops happen, reported at the next start."""

from __future__ import annotations

import logging

from miniobserv.agent.collectors import Registry
from miniobserv.agent.drops import DROPS_FILE, DropCounters
from miniobserv.agent.runner import Runner
from miniobserv.model import MetricBatch
from tests.agent.test_runner import Counting, make_runner, metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_counts_are_logged_once_a_minute_only_while_drops_happen(caplog):
    clock = Clock()
    drops = DropCounters(clock=clock)
    with caplog.at_level(logging.WARNING):
        drops.add("queue_full", 2)
        clock.now += 59.9
        drops.tick()
        assert caplog.text == ""  # not a minute yet
        clock.now += 0.1
        drops.tick()
        assert caplog.text.count("dropped in the last 60s") == 1
        assert "queue_full=2 (since start: queue_full=2)" in caplog.text
        caplog.clear()
        clock.now += 60
        drops.tick()
        assert caplog.text == ""  # a minute without drops: silent
        drops.add("spool_full")
        clock.now += 60
        drops.tick()
        assert "spool_full=1 (since start: queue_full=2 spool_full=1)" in caplog.text


def test_every_queue_full_drop_is_counted(caplog):
    runner = make_runner("http://127.0.0.1:9")
    for _ in range(Runner.QUEUE_SIZE + 3):
        runner.enqueue(MetricBatch("web-01", metrics(1)))
    assert runner.drops.totals["queue_full"] == 3


def test_the_next_start_reports_what_the_last_run_dropped(tmp_path, caplog):
    path = tmp_path / DROPS_FILE
    runner = make_runner("http://127.0.0.1:9")
    runner.drops = DropCounters(path)
    runner.outbox.drops = runner.drops
    for _ in range(Runner.QUEUE_SIZE + 2):
        runner.enqueue(MetricBatch("web-01", metrics(1)))
    runner.drops.save()  # what stop() and the minute line do
    second = Runner("web-01", Registry([Counting()]), runner.sender, 3600.0, 0.5,
                    drops=DropCounters(path))
    with caplog.at_level(logging.INFO):
        second.start()
        second.stop()
    started = next(r.message for r in caplog.records if "agent started" in r.message)
    assert "dropped in the previous run: queue_full=2" in started
    third = DropCounters(path)  # the second run started from zero, lost one at shutdown
    assert third.previous["queue_full"] == 0 and third.previous["lost_at_shutdown"] == 1
