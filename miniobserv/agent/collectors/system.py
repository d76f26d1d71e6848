"""Host-wide figures: load averages, uptime and the number of processes."""

from __future__ import annotations

import time
from collections.abc import Callable, Sized

import psutil

from miniobserv.agent.collectors.base import Clock, utc_now
from miniobserv.model import Metric


class LoadCollector:
    """``load.avg_1m``, ``load.avg_5m`` and ``load.avg_15m`` from ``stat()`` (getloadavg)."""

    name = "load"

    def __init__(self, host: str,
                 stat: Callable[[], tuple[float, float, float]] = psutil.getloadavg,
                 clock: Clock = utc_now) -> None:
        self.host = host
        self._stat = stat
        self._clock = clock

    def collect(self) -> list[Metric]:
        now = self._clock()
        one, five, fifteen = self._stat()
        return [Metric(now, self.host, "load.avg_1m", round(one, 3)),
                Metric(now, self.host, "load.avg_5m", round(five, 3)),
                Metric(now, self.host, "load.avg_15m", round(fifteen, 3))]


class UptimeCollector:
    """``system.uptime_seconds``: ``epoch()`` minus ``boot_time()``, never negative."""

    name = "uptime"

    def __init__(self, host: str, boot_time: Callable[[], float] = psutil.boot_time,
                 epoch: Callable[[], float] = time.time, clock: Clock = utc_now) -> None:
        self.host = host
        self._boot_time = boot_time
        self._epoch = epoch
        self._clock = clock

    def collect(self) -> list[Metric]:
        uptime = max(0.0, self._epoch() - self._boot_time())
        return [Metric(self._clock(), self.host, "system.uptime_seconds",
                       float(round(uptime)))]


class ProcessCountCollector:
    """``system.process_count``: how many process ids ``pids()`` lists."""

    name = "processes"

    def __init__(self, host: str, pids: Callable[[], Sized] = psutil.pids,
                 clock: Clock = utc_now) -> None:
        self.host = host
        self._pids = pids
        self._clock = clock

    def collect(self) -> list[Metric]:
        return [Metric(self._clock(), self.host, "system.process_count",
                       float(len(self._pids())))]
