"""The registry: every collector runs, one failing does not stop the others, labels merge."""

from __future__ import annotations

import logging

import pytest

from miniobserv.agent.collectors import Registry, default_collectors
from miniobserv.agent.collectors.base import CounterDeltas
from miniobserv.errors import ConfigError
from miniobserv.model import METRIC_NAMES, Metric
from tests.agent.collectors.helpers import NOW


class Fixed:
    def __init__(self, name: str, *metrics: Metric) -> None:
        self.name = name
        self.metrics = list(metrics)

    def collect(self) -> list[Metric]:
        return list(self.metrics)


class Broken:
    name = "broken"

    def collect(self) -> list[Metric]:
        raise OSError("/proc is not mounted")


def metric(name: str, labels: dict | None = None) -> Metric:
    return Metric(NOW, "web-01", name, 1.0, labels or {})


def test_one_failing_collector_is_logged_and_the_others_still_report(caplog):
    registry = Registry([Fixed("a", metric("mem.used_pct")), Broken(),
                         Fixed("b", metric("load.avg_1m"))])
    with caplog.at_level(logging.WARNING):
        metrics = registry.collect()
    assert [m.name for m in metrics] == ["mem.used_pct", "load.avg_1m"]
    assert "collector broken failed: /proc is not mounted" in caplog.text


def test_agent_labels_are_merged_and_the_metrics_own_label_wins():
    registry = Registry([Fixed("cpu", metric("cpu.usage_pct", {"core": "total"}))],
                        {"env": "prod", "core": "ignored"})
    [merged] = registry.collect()
    assert merged.labels == {"env": "prod", "core": "total"}


def test_fifteen_agent_labels_fit_sixteen_do_not():
    fifteen = {f"k{i}": "v" for i in range(15)}
    registry = Registry([Fixed("disk", metric("disk.used_pct", {"mount": "/"}))], fifteen)
    [merged] = registry.collect()
    assert len(merged.labels) == 16
    with pytest.raises(ConfigError, match="AGENT_LABELS"):
        Registry([], {**fifteen, "k15": "v"})


def test_registry_names_its_collectors():
    assert Registry([Fixed("a"), Broken()]).names == ["a", "broken"]


def test_default_collectors_read_this_host_and_emit_only_built_in_names():
    registry = Registry(default_collectors("this-host"))
    registry.collect()
    metrics = registry.collect()
    names = {m.name for m in metrics}
    assert names <= METRIC_NAMES
    assert {"cpu.usage_pct", "mem.used_pct", "load.avg_1m", "system.uptime_seconds",
            "system.process_count"} <= names
    assert len(registry.names) == len(set(registry.names)) == 10


def test_counter_deltas_seed_then_increase_then_clamp():
    deltas = CounterDeltas()
    assert deltas.delta("a", 10) is None
    deltas.end_pass()
    assert deltas.delta("a", 15) == 5.0
    deltas.end_pass()
    assert deltas.delta("a", 3) == 0.0
