"""Network traffic, errors and drops per interface, as deltas since the previous pass."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psutil

from miniobserv.agent.collectors.base import Clock, CounterDeltas, utc_now
from miniobserv.model import Metric


def _net_io() -> dict[str, Any]:
    return psutil.net_io_counters(pernic=True) or {}


def is_loopback(iface: str) -> bool:
    """True for Linux's loopback interface (``lo``, or ``lo0`` elsewhere)."""
    return iface in ("lo", "lo0")


class NetCollector:
    """``net.bytes_in`` and ``net.bytes_out`` per interface (label ``iface``).

    The first pass only seeds the counters; a counter that went backwards (wrap, or a driver
    reset) gives 0. ``ifaces`` (NET_IFACES) names exactly the interfaces to report; without
    it every interface but loopback is reported.
    """

    name = "net"
    FIELDS: tuple[tuple[str, str], ...] = (("bytes_recv", "net.bytes_in"),
                                           ("bytes_sent", "net.bytes_out"))

    def __init__(self, host: str, ifaces: Sequence[str] = (),
                 stat: Callable[[], dict[str, Any]] = _net_io, clock: Clock = utc_now) -> None:
        self.host = host
        self.ifaces = tuple(ifaces)
        self._stat = stat
        self._clock = clock
        self._deltas = CounterDeltas()

    def is_wanted(self, iface: str) -> bool:
        """NET_IFACES when given, otherwise every non-loopback interface."""
        return iface in self.ifaces if self.ifaces else not is_loopback(iface)

    def collect(self) -> list[Metric]:
        now = self._clock()
        metrics: list[Metric] = []
        for iface, counters in sorted(self._stat().items()):
            if not self.is_wanted(iface):
                continue
            for attr, metric_name in self.FIELDS:
                delta = self._deltas.delta((iface, attr), getattr(counters, attr))
                if delta is not None:
                    metrics.append(Metric(now, self.host, metric_name, delta, {"iface": iface}))
        self._deltas.end_pass()
        return metrics


class NetErrorsCollector(NetCollector):
    """``net.errors_in/out`` and ``net.drops_in/out`` per interface, same rules as bytes."""

    name = "net_errors"
    FIELDS = (("errin", "net.errors_in"), ("errout", "net.errors_out"),
              ("dropin", "net.drops_in"), ("dropout", "net.drops_out"))
