"""The agent's collectors and the set a host runs by default."""

from __future__ import annotations

from collections.abc import Sequence

from miniobserv.agent.collectors.base import Collector, CounterDeltas, Registry
from miniobserv.agent.collectors.cpu import CpuCollector
from miniobserv.agent.collectors.disk import DiskCollector, DiskIoCollector
from miniobserv.agent.collectors.memory import MemoryCollector, SwapCollector
from miniobserv.agent.collectors.net import NetCollector, NetErrorsCollector
from miniobserv.agent.collectors.system import (
    LoadCollector,
    ProcessCountCollector,
    UptimeCollector,
)

__all__ = [
    "Collector", "CounterDeltas", "Registry", "CpuCollector", "DiskCollector",
    "DiskIoCollector", "MemoryCollector", "SwapCollector", "NetCollector", "NetErrorsCollector",
    "LoadCollector", "ProcessCountCollector", "UptimeCollector", "default_collectors",
]


def default_collectors(host: str, disk_mounts: Sequence[str] = (),
                       net_ifaces: Sequence[str] = ()) -> list[Collector]:
    """Every collector, reading the real OS, in the order they report."""
    return [
        CpuCollector(host),
        MemoryCollector(host),
        SwapCollector(host),
        LoadCollector(host),
        DiskCollector(host, mounts=disk_mounts),
        DiskIoCollector(host),
        NetCollector(host, ifaces=net_ifaces),
        NetErrorsCollector(host, ifaces=net_ifaces),
        UptimeCollector(host),
        ProcessCountCollector(host),
    ]
