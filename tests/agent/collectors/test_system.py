"""Load averages, uptime and process count."""

from __future__ import annotations

from miniobserv.agent.collectors.system import (
    LoadCollector,
    ProcessCountCollector,
    UptimeCollector,
)
from tests.agent.collectors.helpers import assert_well_formed


def values(metrics):
    return {m.name: m.value for m in metrics}


def test_load_averages(clock):
    metrics = LoadCollector("web-01", stat=lambda: (0.5, 1.25, 2.0), clock=clock).collect()
    assert_well_formed(metrics)
    assert values(metrics) == {"load.avg_1m": 0.5, "load.avg_5m": 1.25, "load.avg_15m": 2.0}


def test_uptime_is_now_minus_boot_time(clock):
    collector = UptimeCollector("web-01", boot_time=lambda: 1_000.0, epoch=lambda: 4_600.4,
                                clock=clock)
    metrics = collector.collect()
    assert_well_formed(metrics)
    assert values(metrics) == {"system.uptime_seconds": 3600.0}


def test_uptime_never_negative_when_the_clock_is_behind(clock):
    collector = UptimeCollector("web-01", boot_time=lambda: 5_000.0, epoch=lambda: 4_000.0,
                                clock=clock)
    assert values(collector.collect()) == {"system.uptime_seconds": 0.0}


def test_process_count(clock):
    metrics = ProcessCountCollector("web-01", pids=lambda: [1, 2, 3, 42], clock=clock).collect()
    assert_well_formed(metrics)
    assert values(metrics) == {"system.process_count": 4.0}
