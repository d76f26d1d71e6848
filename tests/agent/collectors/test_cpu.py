"""CPU percent from two samples of per-core times."""

from __future__ import annotations

from collections import namedtuple

import pytest

from miniobserv.agent.collectors.cpu import CpuCollector, busy_and_total, busy_pct
from tests.agent.collectors.helpers import assert_well_formed, by_label

Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")


def times(user: float, idle: float, *, system: float = 0.0, iowait: float = 0.0,
          guest: float = 0.0) -> Times:
    return Times(user, 0.0, system, idle, iowait, 0.0, 0.0, 0.0, guest, 0.0)


class Samples:
    """Hands out one list of per-core times per call; records the ``percpu`` argument."""

    def __init__(self, *samples: list[Times]) -> None:
        self.samples = list(samples)
        self.calls: list[bool] = []

    def __call__(self, percpu: bool = False) -> list[Times]:
        self.calls.append(percpu)
        return self.samples.pop(0)


def test_the_baseline_is_taken_at_construction_so_the_first_pass_has_every_core(clock):
    stat = Samples([times(10, 90), times(0, 100)], [times(60, 140), times(25, 175)])
    collector = CpuCollector("web-01", stat=stat, clock=clock)
    assert stat.calls == [True]  # sampled once, before any collect()
    metrics = collector.collect()
    assert_well_formed(metrics)
    assert by_label(metrics, "cpu.usage_pct", "core") == {
        "total": 37.5, "0": 50.0, "1": 25.0}


def test_total_and_per_core_since_previous_collection(clock):
    stat = Samples(
        [times(10, 90), times(50, 50), times(0, 100)],
        # core 0: 30 busy of 100; core 1: 100 of 100; core 2: 0 of 100
        [times(40, 160), times(150, 50), times(0, 200)],
    )
    collector = CpuCollector("web-01", stat=stat, clock=clock)
    metrics = collector.collect()
    assert_well_formed(metrics)
    assert {m.name for m in metrics} == {"cpu.usage_pct"}
    assert by_label(metrics, "cpu.usage_pct", "core") == {
        "total": pytest.approx(130 / 300 * 100, abs=0.01), "0": 30.0, "1": 100.0, "2": 0.0}
    assert stat.calls == [True, True]


def test_core_labels_count_from_zero_for_every_core(clock):
    sample = [times(i, 100) for i in range(8)]
    later = [times(i + 5, 105) for i in range(8)]
    collector = CpuCollector("web-01", stat=Samples(sample, later), clock=clock)
    cores = by_label(collector.collect(), "cpu.usage_pct", "core")
    assert list(cores) == ["total"] + [str(i) for i in range(8)]
    assert set(cores.values()) == {50.0}


def test_iowait_counts_as_idle_and_guest_is_not_counted_twice():
    busy, total = busy_and_total(times(30, 50, system=10, iowait=10, guest=20))
    assert (busy, total) == (40, 100)  # guest (20) is already inside user (30)


def test_no_time_passed_gives_zero_not_division_error():
    assert busy_pct((5.0, 10.0), (5.0, 10.0)) == 0.0


def test_counter_going_backwards_is_clamped_to_the_range():
    assert busy_pct((50.0, 100.0), (10.0, 200.0)) == 0.0
    assert busy_pct((0.0, 100.0), (300.0, 200.0)) == 100.0


def test_cores_coming_online_reseed_instead_of_misreporting(clock):
    stat = Samples([times(1, 1)], [times(2, 2), times(1, 1)], [times(4, 2), times(3, 1)])
    collector = CpuCollector("web-01", stat=stat, clock=clock)
    assert collector.collect() == []
    assert by_label(collector.collect(), "cpu.usage_pct", "core") == {
        "total": 100.0, "0": 100.0, "1": 100.0}
