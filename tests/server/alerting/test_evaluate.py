"""Evaluation cycles over the fake store, delivery to a real loopback receiver, the service."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from miniobserv.config import ServerConfig
from miniobserv.model import Metric, MetricBatch
from miniobserv.rules import Notification, parse_alert_rules
from miniobserv.server.alerting import notify
from miniobserv.server.alerting.evaluate import evaluation_window, run_cycle
from miniobserv.server.alerting.notify import Deliverer, body_for, describe, retry_time
from miniobserv.server.alerting.service import AlertingService
from tests.fakes import FakeRepositories
from tests.server.alerting.capture import Capture, capture_server

T0 = datetime.now(UTC).replace(microsecond=0)
INTERVAL = timedelta(seconds=10)
CPU = {"host": "*", "name": "cpu.usage_pct", "labels": {"core": "total"}, "op": ">",
       "threshold": 90, "for": "20s"}


def config(*rules: dict[str, Any], channels: tuple[Notification, ...] = ()) -> ServerConfig:
    return ServerConfig(agent_token="x" * 32, alert_rules=parse_alert_rules(list(rules)),
                        alert_notifications=channels, alert_interval=INTERVAL,
                        host_stale_after=timedelta(seconds=20),
                        host_down_after=timedelta(seconds=50))


def cpu(repos: FakeRepositories, host: str, value: float, time: datetime,
        core: str = "total") -> None:
    repos.metrics.insert_batch(MetricBatch(host, [
        Metric(time, host, "cpu.usage_pct", value, {"core": core})], uuid.uuid4()))


def at(step: int) -> datetime:
    return T0 + step * INTERVAL


@pytest.fixture
def repos() -> FakeRepositories:
    return FakeRepositories()


def states(repos: FakeRepositories) -> dict[str, str]:
    return {s.host: s.state for s in repos.fleet.alert_states()}


def events(repos: FakeRepositories) -> list[tuple[str, str]]:
    return [(row.item.payload["event"], row.item.payload["host"]) for row in repos.fleet.outbox]


def test_star_rule_evaluates_every_reporting_host_and_fires_once(repos: FakeRepositories) -> None:
    cfg = config(CPU, channels=(Notification("webhook", "http://127.0.0.1:9/a"),))
    for step, (a, b) in enumerate([(95, 10), (96, 10), (97, 10), (98, 10)]):
        cpu(repos, "web-01", a, at(step))
        cpu(repos, "web-02", b, at(step))
        cpu(repos, "web-01", 1, at(step), core="0")  # another series: not this rule's
        run_cycle(repos.fleet, cfg, at(step))
    assert states(repos) == {"web-01": "firing", "web-02": "ok"}
    assert [e for e in events(repos) if e[0] == "firing"] == [("firing", "web-01")]
    payload = repos.fleet.outbox[0].item.payload
    assert payload == {"event": "firing", "host": "web-01", "rule": {
        "host": "*", "name": "cpu.usage_pct", "labels": {"core": "total"}, "op": ">",
        "threshold": 90.0, "for": "20s"}, "value": 97.0, "at": payload["at"],
        "labels": {"core": "total"}}


def test_one_outbox_row_per_channel_and_event(repos: FakeRepositories) -> None:
    channels = (Notification("webhook", "http://127.0.0.1:9/a"),
                Notification("slack", "http://127.0.0.1:9/b"))
    cfg = config({**CPU, "for": "0s"}, channels=channels)
    cpu(repos, "web-01", 95, at(0))
    run_cycle(repos.fleet, cfg, at(0))
    assert sorted(row.item.channel for row in repos.fleet.outbox) == \
        sorted(channel.key for channel in channels)


def test_newest_value_decides_and_old_values_are_no_data(repos: FakeRepositories) -> None:
    cfg = config({**CPU, "for": "0s"})
    cpu(repos, "web-01", 95, at(0) - timedelta(seconds=5))
    cpu(repos, "web-01", 20, at(0))  # the newest point, not the oldest
    run_cycle(repos.fleet, cfg, at(0))
    assert states(repos) == {"web-01": "ok"}
    window = evaluation_window(cfg)
    run_cycle(repos.fleet, cfg, at(0) + window + timedelta(seconds=1))
    assert states(repos) == {"web-01": "no_data"}


def test_a_rule_for_one_host_that_never_reported_is_no_data(repos: FakeRepositories) -> None:
    cfg = config({**CPU, "host": "web-07"})
    cpu(repos, "web-01", 99, at(0))
    run_cycle(repos.fleet, cfg, at(0))
    [state] = repos.fleet.alert_states()
    assert (state.host, state.state, state.labels) == ("web-07", "no_data", {"core": "total"})


def test_states_of_removed_rules_are_forgotten(repos: FakeRepositories) -> None:
    cpu(repos, "web-01", 99, at(0))
    run_cycle(repos.fleet, config(CPU), at(0))
    run_cycle(repos.fleet, config({**CPU, "threshold": 50}), at(1))
    assert {s.rule_key for s in repos.fleet.alert_states()} == \
        {config({**CPU, "threshold": 50}).alert_rules[0].key}


def test_host_down_and_recovered_once_each(repos: FakeRepositories) -> None:
    cfg = config()
    cpu(repos, "web-01", 1, at(0))
    seen = repos.metrics.host_seen["web-01"]
    for offset in (10, 40, 51, 60, 300):
        run_cycle(repos.fleet, cfg, seen + timedelta(seconds=offset))
    assert events(repos) == []  # no channel: nothing queued, state still kept
    assert [h.down for h in repos.fleet.host_states()] == [True]
    cfg = config(channels=(Notification("webhook", "http://127.0.0.1:9/a"),))
    repos.fleet.hosts.clear()
    for offset in (51, 60, 300):
        run_cycle(repos.fleet, cfg, seen + timedelta(seconds=offset))
    cpu(repos, "web-01", 1, at(0))
    run_cycle(repos.fleet, cfg, repos.metrics.host_seen["web-01"] + timedelta(seconds=1))
    run_cycle(repos.fleet, cfg, repos.metrics.host_seen["web-01"] + timedelta(seconds=2))
    assert events(repos) == [("host.down", "web-01"), ("host.recovered", "web-01")]
    assert repos.fleet.outbox[0].item.payload["rule"] is None


# --- delivery -------------------------------------------------------------------------------

PAYLOAD = {"event": "firing", "host": "web-01", "rule": {
    "host": "*", "name": "cpu.usage_pct", "labels": {"core": "total"}, "op": ">",
    "threshold": 90.0, "for": "5m"}, "value": 97.5, "at": "2026-06-05T10:00:00Z",
    "labels": {"core": "total"}}


def test_shapes() -> None:
    line = "[FIRING] web-01: cpu.usage_pct{core=total} > 90 for 5m (value 97.5) at " \
           "2026-06-05T10:00:00Z"
    assert describe(PAYLOAD) == line
    assert body_for("slack", PAYLOAD) == {"text": line}
    assert body_for("discord", PAYLOAD) == {"content": line.replace("_", "\\_"),
                                            "allowed_mentions": {"parse": []}}
    assert body_for("webhook", PAYLOAD) == PAYLOAD
    down = {"event": "host.down", "host": "web-02", "rule": None, "value": None,
            "at": "2026-06-05T10:00:00Z", "labels": {}}
    assert describe(down) == "[HOST DOWN] web-02 at 2026-06-05T10:00:00Z"


@pytest.fixture
def capture() -> Iterator[Capture]:
    with capture_server() as receiver:
        yield receiver


def queue(repos: FakeRepositories, channels: tuple[Notification, ...], *events: str) -> None:
    cfg = config(channels=channels)
    from miniobserv.server.alerting.evaluate import Cycle

    cycle = Cycle(events=[{**PAYLOAD, "event": event} for event in events])
    repos.fleet.save_cycle([], [], cycle.outbox(cfg.alert_notifications, T0), [])


def test_every_shape_reaches_its_receiver(repos: FakeRepositories, capture: Capture) -> None:
    channels = (Notification("webhook", capture.url + "/hook"),
                Notification("slack", capture.url + "/slack"),
                Notification("discord", capture.url + "/discord"))
    queue(repos, channels, "firing")
    assert Deliverer(repos.fleet, channels).deliver_due(T0) == 3
    by_path = dict(zip(capture.paths, capture.bodies, strict=True))
    assert by_path["/hook"] == PAYLOAD
    assert by_path["/slack"] == body_for("slack", PAYLOAD)
    assert by_path["/discord"] == body_for("discord", PAYLOAD)
    assert repos.fleet.pending_notifications() == []


def test_failures_are_retried_in_order_then_given_up(repos: FakeRepositories,
                                                     capture: Capture,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    channel = Notification("webhook", capture.url + "/hook")
    queue(repos, (channel,), "firing", "resolved")
    capture.statuses = [500]
    deliverer = Deliverer(repos.fleet, (channel,))
    assert deliverer.deliver_due(T0) == 0  # firing failed: resolved waits behind it
    assert capture.events() == ["firing"]
    retry = repos.fleet.pending_notifications()[0].next_attempt_at
    assert retry == retry_time(0, T0)
    assert deliverer.deliver_due(retry - timedelta(microseconds=1)) == 0  # not yet due
    assert deliverer.deliver_due(retry) == 2
    assert capture.events() == ["firing", "firing", "resolved"]
    capture.statuses = [503] * 10
    queue(repos, (channel,), "firing")
    now = T0
    for _ in range(len(notify.RETRY_DELAYS_S) + 1):
        deliverer.deliver_due(now)
        now += timedelta(minutes=10)
    assert repos.fleet.pending_notifications() == []
    assert repos.fleet.outbox[-1].status == "failed"
    assert "giving up" in caplog.text and capture.url not in caplog.text


def test_timeouts_and_refused_connections_are_retried(repos: FakeRepositories) -> None:
    channel = Notification("webhook", "http://127.0.0.1:9/nobody")

    def refuse(url: str, body: Any) -> int:
        raise requests.ConnectionError("refused")

    queue(repos, (channel,), "firing")
    Deliverer(repos.fleet, (channel,), refuse).deliver_due(T0)
    [item] = repos.fleet.pending_notifications()
    assert item.attempts == 1


def test_a_channel_no_longer_configured_is_dropped(repos: FakeRepositories) -> None:
    queue(repos, (Notification("webhook", "http://127.0.0.1:9/old"),), "firing")
    assert Deliverer(repos.fleet, ()).deliver_due(T0) == 1
    assert repos.fleet.outbox[0].status == "failed"


# --- the service ----------------------------------------------------------------------------

def test_only_one_service_leads(repos: FakeRepositories, capture: Capture) -> None:
    cfg = replace(config({**CPU, "for": "0s"}, channels=(
        Notification("webhook", capture.url + "/hook"),)), alert_interval=timedelta(hours=1))
    cpu(repos, "web-01", 99, datetime.now(UTC))
    services = [AlertingService(cfg, repos) for _ in range(3)]
    try:
        for service in services:
            service.tick()
        assert [s.leading.is_set() for s in services] == [True, False, False]
        assert repos.fleet.cycles == 1
        services[0].deliverer.deliver_due(datetime.now(UTC))
        assert capture.events() == ["firing"]
        services[0].stop()
        services[1].tick()
        assert services[1].leading.is_set()
        assert repos.fleet.cycles == 2 and capture.events() == ["firing"]
    finally:
        for service in services:
            service.stop()


def test_the_service_delivers_off_the_evaluation_thread(repos: FakeRepositories,
                                                        capture: Capture) -> None:
    cfg = replace(config({**CPU, "for": "0s"}, channels=(
        Notification("webhook", capture.url + "/hook"),)), alert_interval=timedelta(seconds=1))
    cpu(repos, "web-01", 99, datetime.now(UTC))
    service = AlertingService(cfg, repos).start()
    try:
        assert capture.wait_for(1)
    finally:
        service.stop()
    assert capture.events() == ["firing"]


def test_a_store_outage_is_logged_and_survived(repos: FakeRepositories,
                                               caplog: pytest.LogCaptureFixture) -> None:
    service = AlertingService(config(CPU), repos)
    try:
        repos.down = True
        service.tick()
        assert "evaluation skipped" in caplog.text
        repos.down = False
        service.tick()
        assert repos.fleet.cycles == 1
    finally:
        service.stop()


def test_retention_runs_on_the_leader(repos: FakeRepositories) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    cpu(repos, "web-01", 1, old)
    cpu(repos, "web-01", 2, datetime.now(UTC))
    service = AlertingService(config(), repos)
    try:
        service.tick()  # takes the lead
        service.retention_tick()
    finally:
        service.stop()
    assert [m.value for m in repos.metrics.stored()] == [2]
