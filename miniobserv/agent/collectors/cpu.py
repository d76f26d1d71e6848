"""CPU busy percent, total and per core, measured since the previous collection."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psutil

from miniobserv.agent.collectors.base import Clock, utc_now
from miniobserv.model import Metric

# Guest time is already counted in user and nice on Linux; iowait is idle time.
_NOT_IN_TOTAL = ("guest", "guest_nice")
_IDLE = ("idle", "iowait")


def busy_and_total(times: Any) -> tuple[float, float]:
    """The busy and total seconds of one ``cpu_times`` sample (as psutil computes them)."""
    fields = times._asdict()
    total = sum(fields.values()) - sum(fields.get(key, 0.0) for key in _NOT_IN_TOTAL)
    idle = sum(fields.get(key, 0.0) for key in _IDLE)
    return total - idle, total


def busy_pct(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Busy percent between two samples, 0 to 100 (0 when no time passed)."""
    busy, total = after[0] - before[0], after[1] - before[1]
    if total <= 0:
        return 0.0
    return min(100.0, max(0.0, busy / total * 100.0))


class CpuCollector:
    """``cpu.usage_pct`` with ``core=total`` and one series per core (``"0"``…``"n-1"``).

    Non-blocking: each pass compares with the sample of the previous pass. The baseline is
    taken when the collector is created (as the Go agent's gopsutil does at process start),
    so the first pass already measures the time since then and every pass carries the total
    and one point per core. ``stat`` is called as ``stat(percpu=True)`` and returns per-core time tuples
    (``psutil.cpu_times``); the total is their sum, as the kernel's own ``cpu`` line is.
    """

    name = "cpu"

    def __init__(self, host: str, stat: Callable[..., Sequence[Any]] = psutil.cpu_times,
                 clock: Clock = utc_now) -> None:
        self.host = host
        self._stat = stat
        self._clock = clock
        self._previous = self._sample()  # the baseline of the first pass

    def _sample(self) -> list[tuple[float, float]]:
        return [busy_and_total(times) for times in self._stat(percpu=True)]

    def collect(self) -> list[Metric]:
        cores = self._sample()
        previous, self._previous = self._previous, cores
        if len(previous) != len(cores):
            return []  # cores went on/offline: this pass only seeds the new baseline
        now = self._clock()
        total_before = (sum(b for b, _ in previous), sum(t for _, t in previous))
        total_after = (sum(b for b, _ in cores), sum(t for _, t in cores))
        metrics = [self._metric(now, "total", busy_pct(total_before, total_after))]
        for index, (before, after) in enumerate(zip(previous, cores, strict=True)):
            metrics.append(self._metric(now, str(index), busy_pct(before, after)))
        return metrics

    def _metric(self, now: Any, core: str, value: float) -> Metric:
        return Metric(now, self.host, "cpu.usage_pct", round(value, 2), {"core": core})
