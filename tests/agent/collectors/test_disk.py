"""Disk space per mount (filtering, timeouts) and disk I/O deltas per device."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import pytest

from miniobserv.agent.collectors.disk import (
    DiskCollector,
    DiskIoCollector,
    call_with_timeout,
    select_mounts,
)
from tests.agent.collectors.helpers import Counters, assert_well_formed, by_label


def part(device: str, mountpoint: str, fstype: str = "ext4") -> SimpleNamespace:
    return SimpleNamespace(device=device, mountpoint=mountpoint, fstype=fstype, opts="rw")


def usage(used: int, free: int, total: int | None = None) -> SimpleNamespace:
    return SimpleNamespace(used=used, free=free, total=total if total is not None else used + free)


HOST_MOUNTS = [
    part("/dev/vda1", "/"),
    part("proc", "/proc", "proc"),
    part("sysfs", "/sys", "sysfs"),
    part("tmpfs", "/run", "tmpfs"),
    part("devtmpfs", "/dev", "devtmpfs"),
    part("cgroup2", "/sys/fs/cgroup", "cgroup2"),
    part("overlay", "/var/lib/docker/overlay2/abc/merged", "overlay"),
    part("/dev/loop3", "/snap/core/1", "squashfs"),
    part("/dev/vdb1", "/data", "xfs"),
    part("/dev/vdb1", "/srv/www", "xfs"),  # a bind mount of /data's device
    part("/dev/vda1", "/", "ext4"),  # the same line twice, as /proc/mounts can show
    part("nas:/export", "/mnt/nas", "nfs4"),
]


def test_only_real_filesystems_first_mount_of_each_device():
    chosen = [p.mountpoint for p in select_mounts(HOST_MOUNTS)]
    assert chosen == ["/", "/data", "/mnt/nas"]


def test_disk_mounts_filter_names_exactly_the_mounts_reported():
    chosen = [p.mountpoint for p in select_mounts(HOST_MOUNTS, ("/data", "/run", "/nowhere"))]
    assert chosen == ["/run", "/data"]  # asked for by name, so even a tmpfs is reported


def test_reports_three_metrics_per_mount_with_mount_label(clock):
    sizes = {"/": usage(30, 70), "/data": usage(1, 3, total=5)}
    collector = DiskCollector("web-01", partitions=lambda all: [part("/dev/a", "/"),
                                                                part("/dev/b", "/data")],
                              usage=sizes.__getitem__, clock=clock)
    metrics = collector.collect()
    assert_well_formed(metrics)
    assert by_label(metrics, "disk.used_pct", "mount") == {"/": 30.0, "/data": 25.0}
    assert by_label(metrics, "disk.used_bytes", "mount") == {"/": 30.0, "/data": 1.0}
    assert by_label(metrics, "disk.total_bytes", "mount") == {"/": 100.0, "/data": 5.0}


def test_partitions_is_asked_for_every_mount_not_only_physical_ones(clock):
    asked = []

    def partitions(all: bool = False):
        asked.append(all)
        return []

    DiskCollector("web-01", partitions=partitions, usage=lambda m: usage(1, 1),
                  clock=clock).collect()
    assert asked == [True]


def test_empty_filesystem_gives_zero_percent(clock):
    collector = DiskCollector("web-01", partitions=lambda all: [part("/dev/a", "/")],
                              usage=lambda m: usage(0, 0), clock=clock)
    assert by_label(collector.collect(), "disk.used_pct", "mount") == {"/": 0.0}


def test_mount_that_fails_is_skipped_with_a_warning(clock, caplog):
    def flaky(mountpoint: str):
        if mountpoint == "/gone":
            raise PermissionError(13, "Permission denied")
        return usage(1, 1)

    collector = DiskCollector("web-01", usage=flaky, clock=clock,
                              partitions=lambda all: [part("/dev/a", "/gone"),
                                                      part("/dev/b", "/ok")])
    with caplog.at_level(logging.WARNING):
        metrics = collector.collect()
    assert set(by_label(metrics, "disk.used_pct", "mount")) == {"/ok"}
    assert "/gone" in caplog.text


class HungMount:
    """A disk_usage whose ``/mnt/nas`` blocks until released, like a dead NFS server."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, mountpoint: str):
        if mountpoint == "/mnt/nas":
            self.calls += 1
            self.release.wait(30)
        return usage(1, 3)


def test_hung_mount_is_skipped_after_the_timeout_and_not_piled_up(clock, caplog):
    hung = HungMount()
    collector = DiskCollector("web-01", usage=hung, clock=clock, timeout=0.3,
                              partitions=lambda all: [part("/dev/a", "/"),
                                                      part("nas:/export", "/mnt/nas", "nfs")])
    try:
        with caplog.at_level(logging.WARNING):
            first = collector.collect()
            second = collector.collect()
        assert set(by_label(first, "disk.used_pct", "mount")) == {"/"}
        assert set(by_label(second, "disk.used_pct", "mount")) == {"/"}
        assert hung.calls == 1  # the second pass did not start another stuck call
        assert caplog.text.count("skipping mount /mnt/nas") == 2
    finally:
        hung.release.set()
    collector._hung["/mnt/nas"].join(5)
    assert set(by_label(collector.collect(), "disk.used_pct", "mount")) == {"/", "/mnt/nas"}


def test_call_with_timeout_passes_errors_and_values_through():
    assert call_with_timeout(str.upper, "abc", 5) == "ABC"
    with pytest.raises(FileNotFoundError):
        call_with_timeout(lambda m: open(m), "/nonexistent/file", 5)


def io(read: int, write: int) -> SimpleNamespace:
    return SimpleNamespace(read_bytes=read, write_bytes=write)



def test_disk_io_first_pass_seeds_then_deltas_per_whole_device(clock):
    stat = Counters(
        {"vda": io(1000, 500), "vda1": io(1000, 500), "loop0": io(7, 7), "nvme0n1": io(0, 0)},
        {"vda": io(1600, 900), "vda1": io(1600, 900), "loop0": io(9, 9), "nvme0n1": io(10, 20)},
    )
    collector = DiskIoCollector("web-01", stat=stat, clock=clock)
    assert collector.collect() == []
    metrics = collector.collect()
    assert_well_formed(metrics)
    assert by_label(metrics, "disk.read_bytes", "device") == {"nvme0n1": 10.0, "vda": 600.0}
    assert by_label(metrics, "disk.write_bytes", "device") == {"nvme0n1": 20.0, "vda": 400.0}


@pytest.mark.parametrize("device", ["sda1", "vdb2", "xvda1", "nvme0n1p1", "mmcblk0p2",
                                    "loop12", "ram0", "zram0", "sr0"])
def test_disk_io_skips_partitions_and_virtual_devices(clock, device):
    stat = Counters({device: io(0, 0)}, {device: io(5, 5)})
    collector = DiskIoCollector("web-01", stat=stat, clock=clock)
    collector.collect()
    assert collector.collect() == []


@pytest.mark.parametrize("device", ["sda", "vda", "nvme0n1", "dm-0", "md0", "mmcblk0"])
def test_disk_io_reports_whole_devices(clock, device):
    stat = Counters({device: io(0, 0)}, {device: io(5, 5)})
    collector = DiskIoCollector("web-01", stat=stat, clock=clock)
    collector.collect()
    assert set(by_label(collector.collect(), "disk.read_bytes", "device")) == {device}


def test_disk_io_counter_reset_gives_zero(clock):
    stat = Counters({"sda": io(5000, 5000)}, {"sda": io(100, 6000)}, {"sda": io(300, 6000)})
    collector = DiskIoCollector("web-01", stat=stat, clock=clock)
    collector.collect()
    after_reset = collector.collect()
    assert by_label(after_reset, "disk.read_bytes", "device") == {"sda": 0.0}
    assert by_label(after_reset, "disk.write_bytes", "device") == {"sda": 1000.0}
    assert by_label(collector.collect(), "disk.read_bytes", "device") == {"sda": 200.0}
