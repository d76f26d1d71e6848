"""Memory and swap use: percent, bytes in use and total bytes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import psutil

from miniobserv.agent.collectors.base import Clock, utc_now
from miniobserv.model import Metric


def used_pct(used: float, total: float) -> float:
    """``used`` as a percent of ``total`` (0 when there is no total, e.g. no swap)."""
    return round(used / total * 100.0, 2) if total > 0 else 0.0


def usage_metrics(host: str, prefix: str, now: datetime, used: float,
                  total: float) -> list[Metric]:
    """The three metrics ``<prefix>.used_pct``, ``.used_bytes`` and ``.total_bytes``."""
    return [
        Metric(now, host, f"{prefix}.used_pct", used_pct(used, total)),
        Metric(now, host, f"{prefix}.used_bytes", float(used)),
        Metric(now, host, f"{prefix}.total_bytes", float(total)),
    ]


class MemoryCollector:
    """``mem.used_pct``, ``mem.used_bytes``, ``mem.total_bytes`` from ``stat().used/.total``.

    ``used`` is psutil's (total minus free, buffers and page cache), so the percent and the
    bytes agree with each other and with ``free``'s "used" column.
    """

    name = "memory"

    def __init__(self, host: str, stat: Callable[[], Any] = psutil.virtual_memory,
                 clock: Clock = utc_now) -> None:
        self.host = host
        self._stat = stat
        self._clock = clock

    def collect(self) -> list[Metric]:
        vm = self._stat()
        return usage_metrics(self.host, "mem", self._clock(), vm.used, vm.total)


class SwapCollector:
    """``swap.used_pct``, ``swap.used_bytes``, ``swap.total_bytes`` (all 0 without swap)."""

    name = "swap"

    def __init__(self, host: str, stat: Callable[[], Any] = psutil.swap_memory,
                 clock: Clock = utc_now) -> None:
        self.host = host
        self._stat = stat
        self._clock = clock

    def collect(self) -> list[Metric]:
        swap = self._stat()
        return usage_metrics(self.host, "swap", self._clock(), swap.used, swap.total)
