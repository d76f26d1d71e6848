"""Fixed clock and assertions shared by the collector tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from miniobserv.model import METRIC_SPEC_BY_NAME, Metric

NOW = datetime(2026, 6, 5, 10, 0, 0, tzinfo=UTC)


def fixed_clock() -> datetime:
    return NOW


def by_label(metrics: list[Metric], name: str, key: str) -> dict[str, float]:
    """Values of metric ``name`` keyed by their label ``key``."""
    return {m.labels[key]: m.value for m in metrics if m.name == name}


def assert_well_formed(metrics: list[Metric], host: str = "web-01") -> None:
    """Every metric is a built-in name with its documented label, at the fixed time."""
    for metric in metrics:
        spec = METRIC_SPEC_BY_NAME[metric.name]
        assert metric.host == host
        assert metric.time == NOW
        assert set(metric.labels) == ({spec.label} if spec.label else set())
        assert isinstance(metric.value, float)


class Counters:
    """An injected stat function handing out one prepared sample per call."""

    def __init__(self, *samples: Any) -> None:
        self.samples = list(samples)

    def __call__(self) -> Any:
        return self.samples.pop(0)
