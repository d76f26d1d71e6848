"""The collector interface, counter deltas and the registry that runs every collector.

A collector turns one OS call (injected, the statFn pattern, so tests feed known numbers)
into a list of :class:`~miniobserv.model.Metric`. The :class:`Registry` runs them all: a
collector that raises is logged and skipped, the others still report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Protocol

from miniobserv.errors import ConfigError
from miniobserv.model import MAX_LABELS, Metric

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC (the default clock of every collector)."""
    return datetime.now(UTC)


class Collector(Protocol):
    """One source of metrics; ``collect`` must not block for long and may raise."""

    name: str

    def collect(self) -> list[Metric]: ...


class CounterDeltas:
    """Turns monotonically increasing counters into per-interval increments.

    The first value of a key only seeds it; a counter that went backwards (a wrap or a
    reset) yields 0, never a negative value. Keys absent from a pass are forgotten, so an
    interface that comes back is seeded again.
    """

    def __init__(self) -> None:
        self._previous: dict[Hashable, float] = {}
        self._current: dict[Hashable, float] = {}

    def delta(self, key: Hashable, value: float) -> float | None:
        """The increase of ``key`` since the previous pass, or None when it is new."""
        self._current[key] = value
        before = self._previous.get(key)
        if before is None:
            return None
        return float(value - before) if value >= before else 0.0

    def end_pass(self) -> None:
        """Close a collection pass: what was seen now becomes the baseline."""
        self._previous, self._current = self._current, {}


class Registry:
    """Runs every collector and merges the agent's labels into each metric.

    A metric's own labels (``core``, ``mount``…) win over agent labels of the same key.
    """

    def __init__(self, collectors: Iterable[Collector],
                 labels: Mapping[str, str] | None = None) -> None:
        self.collectors = list(collectors)
        self.labels = dict(labels or {})
        # Every built-in metric carries at most one label of its own.
        if len(self.labels) > MAX_LABELS - 1:
            raise ConfigError(f"AGENT_LABELS has {len(self.labels)} labels: at most "
                              f"{MAX_LABELS - 1} leave room for the collectors' own label")

    @property
    def names(self) -> list[str]:
        return [collector.name for collector in self.collectors]

    def collect(self) -> list[Metric]:
        """One pass over every collector; failures are logged, never raised."""
        metrics: list[Metric] = []
        for collector in self.collectors:
            try:
                metrics.extend(collector.collect())
            except Exception as err:  # noqa: BLE001 - one collector must not stop the rest
                log.warning("collector %s failed: %s", collector.name, err,
                            exc_info=log.isEnabledFor(logging.DEBUG))
        return [self._labelled(metric) for metric in metrics]

    def _labelled(self, metric: Metric) -> Metric:
        if not self.labels:
            return metric
        return Metric(metric.time, metric.host, metric.name, metric.value,
                      {**self.labels, **metric.labels})
