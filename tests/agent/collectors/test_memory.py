"""Memory and swap: three metrics each from used and total."""

from __future__ import annotations

from types import SimpleNamespace

from miniobserv.agent.collectors.memory import MemoryCollector, SwapCollector
from tests.agent.collectors.helpers import assert_well_formed


def values(metrics):
    return {m.name: m.value for m in metrics}


def test_memory_reports_three_metrics(clock):
    collector = MemoryCollector("web-01", stat=lambda: SimpleNamespace(used=1, total=4),
                                clock=clock)
    metrics = collector.collect()
    assert_well_formed(metrics)
    assert values(metrics) == {"mem.used_pct": 25.0, "mem.used_bytes": 1.0,
                               "mem.total_bytes": 4.0}


def test_memory_percent_is_rounded_to_hundredths(clock):
    stat = lambda: SimpleNamespace(used=1, total=3)  # noqa: E731
    metrics = MemoryCollector("web-01", stat=stat, clock=clock).collect()
    assert values(metrics)["mem.used_pct"] == 33.33


def test_swap_reports_three_metrics(clock):
    stat = lambda: SimpleNamespace(used=512, total=2048)  # noqa: E731
    metrics = SwapCollector("web-01", stat=stat, clock=clock).collect()
    assert_well_formed(metrics)
    assert values(metrics) == {"swap.used_pct": 25.0, "swap.used_bytes": 512.0,
                               "swap.total_bytes": 2048.0}


def test_no_swap_gives_zero_percent_not_an_error(clock):
    stat = lambda: SimpleNamespace(used=0, total=0)  # noqa: E731
    metrics = SwapCollector("web-01", stat=stat, clock=clock).collect()
    assert values(metrics)["swap.used_pct"] == 0.0
