"""Network bytes, errors and drops per interface: deltas, seeding, wraps, filters."""

from __future__ import annotations

from types import SimpleNamespace

from miniobserv.agent.collectors.net import NetCollector, NetErrorsCollector
from tests.agent.collectors.helpers import Counters, assert_well_formed, by_label


def nic(recv: int = 0, sent: int = 0, errin: int = 0, errout: int = 0, dropin: int = 0,
        dropout: int = 0) -> SimpleNamespace:
    return SimpleNamespace(bytes_recv=recv, bytes_sent=sent, errin=errin, errout=errout,
                           dropin=dropin, dropout=dropout)



def test_first_pass_only_seeds(clock):
    collector = NetCollector("web-01", stat=Counters({"eth0": nic(100, 200)}), clock=clock)
    assert collector.collect() == []


def test_bytes_are_deltas_since_previous_pass(clock):
    stat = Counters({"eth0": nic(100, 200)}, {"eth0": nic(1100, 250)}, {"eth0": nic(1100, 300)})
    collector = NetCollector("web-01", stat=stat, clock=clock)
    collector.collect()
    metrics = collector.collect()
    assert_well_formed(metrics)
    assert by_label(metrics, "net.bytes_in", "iface") == {"eth0": 1000.0}
    assert by_label(metrics, "net.bytes_out", "iface") == {"eth0": 50.0}
    assert by_label(collector.collect(), "net.bytes_in", "iface") == {"eth0": 0.0}


def test_counter_wrap_or_reset_gives_zero_never_negative(clock):
    stat = Counters({"eth0": nic(2**32 - 10, 500)}, {"eth0": nic(5, 600)},
                    {"eth0": nic(25, 600)})
    collector = NetCollector("web-01", stat=stat, clock=clock)
    collector.collect()
    metrics = collector.collect()
    assert by_label(metrics, "net.bytes_in", "iface") == {"eth0": 0.0}
    assert by_label(metrics, "net.bytes_out", "iface") == {"eth0": 100.0}
    assert by_label(collector.collect(), "net.bytes_in", "iface") == {"eth0": 20.0}


def test_loopback_is_skipped_by_default(clock):
    stat = Counters({"lo": nic(1), "eth0": nic(1), "wlan0": nic(1)},
                    {"lo": nic(9), "eth0": nic(2), "wlan0": nic(3)})
    collector = NetCollector("web-01", stat=stat, clock=clock)
    collector.collect()
    assert by_label(collector.collect(), "net.bytes_in", "iface") == {"eth0": 1.0, "wlan0": 2.0}


def test_net_ifaces_names_exactly_the_interfaces_reported(clock):
    stat = Counters({"lo": nic(1), "eth0": nic(1), "eth1": nic(1)},
                    {"lo": nic(9), "eth0": nic(2), "eth1": nic(3)})
    collector = NetCollector("web-01", ifaces=("lo", "eth1", "bond0"), stat=stat, clock=clock)
    collector.collect()
    assert by_label(collector.collect(), "net.bytes_in", "iface") == {"eth1": 2.0, "lo": 8.0}


def test_interface_that_appears_later_is_seeded_first(clock):
    stat = Counters({"eth0": nic(1)}, {"eth0": nic(2), "wg0": nic(500)},
                    {"eth0": nic(3), "wg0": nic(700)})
    collector = NetCollector("web-01", stat=stat, clock=clock)
    collector.collect()
    assert set(by_label(collector.collect(), "net.bytes_in", "iface")) == {"eth0"}
    assert by_label(collector.collect(), "net.bytes_in", "iface") == {"eth0": 1.0, "wg0": 200.0}


def test_interface_that_vanished_and_came_back_is_seeded_again(clock):
    stat = Counters({"usb0": nic(100)}, {}, {"usb0": nic(5)}, {"usb0": nic(8)})
    collector = NetCollector("web-01", stat=stat, clock=clock)
    collector.collect()
    assert collector.collect() == []
    assert collector.collect() == []  # back with a reset counter: seed, no bogus 0
    assert by_label(collector.collect(), "net.bytes_in", "iface") == {"usb0": 3.0}


def test_errors_and_drops_per_interface(clock):
    stat = Counters({"eth0": nic(errin=1, errout=2, dropin=3, dropout=4), "lo": nic()},
                    {"eth0": nic(errin=2, errout=4, dropin=6, dropout=8), "lo": nic(errin=5)})
    collector = NetErrorsCollector("web-01", stat=stat, clock=clock)
    assert collector.collect() == []
    metrics = collector.collect()
    assert_well_formed(metrics)
    assert {m.name: m.value for m in metrics} == {
        "net.errors_in": 1.0, "net.errors_out": 2.0, "net.drops_in": 3.0, "net.drops_out": 4.0}
    assert {m.labels["iface"] for m in metrics} == {"eth0"}
