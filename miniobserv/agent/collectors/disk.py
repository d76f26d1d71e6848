"""Filesystem space per mount point, and bytes read and written per block device."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psutil

from miniobserv.agent.collectors.base import Clock, CounterDeltas, utc_now
from miniobserv.model import Metric

log = logging.getLogger(__name__)

# Filesystems that hold no user data (as node_exporter and Telegraf skip by default).
PSEUDO_FS_TYPES = frozenset({
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devfs",
    "devpts", "devtmpfs", "efivarfs", "fuse.gvfsd-fuse", "fuse.lxcfs", "fuse.portal",
    "fusectl", "hugetlbfs", "iso9660", "mqueue", "nsfs", "overlay", "aufs", "proc", "procfs",
    "pstore", "ramfs", "rpc_pipefs", "securityfs", "selinuxfs", "squashfs", "erofs", "sysfs",
    "tmpfs", "tracefs", "nfsd",
})

# Whole disks only: partitions would count their bytes twice; loop and RAM disks are noise.
SKIPPED_DEVICE = re.compile(r"(z?ram|loop|fd|sr)\d+|(h|s|v|xv)d[a-z]+\d+|nvme\d+n\d+p\d+|"
                            r"mmcblk\d+p\d+")


def select_mounts(partitions: Iterable[Any], wanted: Sequence[str] = ()) -> list[Any]:
    """The partitions worth reporting, first mount of each device only.

    Without a filter: real filesystems only (no pseudo types). With ``wanted`` (DISK_MOUNTS):
    exactly those mount points, whatever their type, since the user asked for them. Bind
    mounts and repeated lines show the same device again and are skipped.
    """
    chosen: list[Any] = []
    devices: set[str] = set()
    mountpoints: set[str] = set()
    for part in partitions:
        if wanted and part.mountpoint not in wanted:
            continue
        if not wanted and part.fstype in PSEUDO_FS_TYPES:
            continue
        if part.device in devices or part.mountpoint in mountpoints:
            continue
        devices.add(part.device)
        mountpoints.add(part.mountpoint)
        chosen.append(part)
    return chosen


class CallTimeout(TimeoutError):
    """A call did not return in time; ``thread`` is the daemon thread still waiting for it."""

    def __init__(self, message: str, thread: threading.Thread) -> None:
        super().__init__(message)
        self.thread = thread


def call_with_timeout(fn: Callable[[str], Any], arg: str, timeout: float) -> Any:
    """Run ``fn(arg)`` in a daemon thread; raise :class:`CallTimeout` after ``timeout`` s.

    A call stuck in the kernel (a hung NFS server) cannot be cancelled: its daemon thread is
    left behind and dies with the process.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn(arg)
        except BaseException as err:  # noqa: BLE001 - handed to the caller below
            outcome["error"] = err

    worker = threading.Thread(target=target, name=f"statfs {arg}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise CallTimeout(f"no answer within {timeout:g}s", worker)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class DiskCollector:
    """``disk.used_pct``, ``disk.used_bytes`` and ``disk.total_bytes`` with label ``mount``.

    ``partitions`` is called as ``partitions(all=True)``; ``usage(mountpoint)`` is bounded by
    ``timeout`` seconds, so a hung network mount is skipped with a warning instead of stalling
    collection. The percent is ``df``'s: used over used plus available.
    """

    name = "disk"
    TIMEOUT_S = 2.0

    def __init__(self, host: str, mounts: Sequence[str] = (),
                 partitions: Callable[..., Iterable[Any]] = psutil.disk_partitions,
                 usage: Callable[[str], Any] = psutil.disk_usage,
                 clock: Clock = utc_now, timeout: float | None = None) -> None:
        self.host = host
        self.mounts = tuple(mounts)
        self._partitions = partitions
        self._usage = usage
        self._clock = clock
        self.timeout = self.TIMEOUT_S if timeout is None else timeout
        self._hung: dict[str, threading.Thread] = {}

    def collect(self) -> list[Metric]:
        now = self._clock()
        metrics: list[Metric] = []
        for part in select_mounts(self._partitions(all=True), self.mounts):
            try:
                usage = self._usage_of(part.mountpoint)
            except (OSError, TimeoutError) as err:
                log.warning("disk: skipping mount %s: %s", part.mountpoint, err)
                continue
            labels = {"mount": part.mountpoint}
            avail = usage.used + usage.free
            pct = round(usage.used / avail * 100.0, 2) if avail > 0 else 0.0
            metrics += [
                Metric(now, self.host, "disk.used_pct", pct, labels),
                Metric(now, self.host, "disk.used_bytes", float(usage.used), labels),
                Metric(now, self.host, "disk.total_bytes", float(usage.total), labels),
            ]
        return metrics

    def _usage_of(self, mountpoint: str) -> Any:
        """``usage(mountpoint)`` bounded in time; at most one stuck call per mount."""
        hung = self._hung.get(mountpoint)
        if hung is not None and hung.is_alive():
            raise TimeoutError("the previous call has not returned yet")
        self._hung.pop(mountpoint, None)
        try:
            return call_with_timeout(self._usage, mountpoint, self.timeout)
        except CallTimeout as err:
            self._hung[mountpoint] = err.thread
            raise


def _disk_io() -> dict[str, Any]:
    return psutil.disk_io_counters(perdisk=True) or {}


class DiskIoCollector:
    """``disk.read_bytes`` and ``disk.write_bytes`` per whole device (label ``device``).

    Deltas since the previous pass: the first pass seeds, a counter that went backwards
    gives 0. Partitions, loop and RAM devices are skipped.
    """

    name = "diskio"
    FIELDS = (("read_bytes", "disk.read_bytes"), ("write_bytes", "disk.write_bytes"))

    def __init__(self, host: str, stat: Callable[[], dict[str, Any]] = _disk_io,
                 clock: Clock = utc_now) -> None:
        self.host = host
        self._stat = stat
        self._clock = clock
        self._deltas = CounterDeltas()

    def collect(self) -> list[Metric]:
        now = self._clock()
        metrics: list[Metric] = []
        for device, counters in sorted(self._stat().items()):
            if SKIPPED_DEVICE.fullmatch(device):
                continue
            for attr, metric_name in self.FIELDS:
                delta = self._deltas.delta((device, attr), getattr(counters, attr))
                if delta is not None:
                    metrics.append(Metric(now, self.host, metric_name, delta,
                                          {"device": device}))
        self._deltas.end_pass()
        return metrics
