"""One evaluation cycle: rules and host silence in, states and queued deliveries out.

Each rule reads the newest value of every matching series within the evaluation window
(:func:`evaluation_window`: ``max(2 x ALERT_INTERVAL, HOST_DOWN_AFTER)``); a series with no
point in it is ``no_data``. Host ``*`` means every host that reported the metric in the
window, plus those evaluated before (which become ``no_data`` when they fall silent). Host
up/down comes from the ``hosts`` table's last-seen times. Everything a cycle decides is
saved in one transaction together with the outbox rows of the events it caused, so the
events are queued exactly once, whatever the number of server processes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from miniobserv.config import ServerConfig
from miniobserv.model import format_time
from miniobserv.rules import ANY_HOST, AlertRule, Notification
from miniobserv.server.alerting.state import (
    HOST_DOWN,
    Observation,
    host_event,
    host_status,
    initial,
    step,
)
from miniobserv.server.storage.base import AlertState, FleetRepository, HostState, Outgoing
from miniobserv.server.storage.shaping import canonical_labels

log = logging.getLogger(__name__)

SeriesKey = tuple[str, str, str]  # rule key, host, canonical labels


def evaluation_window(config: ServerConfig) -> timedelta:
    """How far back the newest value of a series may be: older means ``no_data``."""
    return max(2 * config.alert_interval, config.host_down_after)


def max_gap(config: ServerConfig) -> timedelta:
    """A longer pause between evaluations breaks a pending run (nobody saw it hold)."""
    return 3 * config.alert_interval + timedelta(seconds=5)


@dataclass
class Cycle:
    """What one evaluation decided; ``events`` are the payloads queued per channel."""

    alerts: list[AlertState] = field(default_factory=list)
    hosts: list[HostState] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def outbox(self, channels: Sequence[Notification], now: datetime) -> list[Outgoing]:
        return [Outgoing(channel.key, event, now) for event in self.events for channel in channels]


def run_cycle(fleet: FleetRepository, config: ServerConfig, now: datetime) -> Cycle:
    """Evaluate every rule and host, save the result and queue its events; return it."""
    cycle = Cycle()
    stored = {_key(s): s for s in fleet.alert_states()}
    for rule in config.alert_rules:
        evaluate_rule(rule, fleet, stored, now, config, cycle)
    check_hosts(fleet, config, now, cycle)
    fleet.save_cycle(cycle.alerts, cycle.hosts, cycle.outbox(config.alert_notifications, now),
                     [rule.key for rule in config.alert_rules])
    for event in cycle.events:
        log.info("alerting: %s %s %s", event["event"], event["host"],
                 event["rule"]["name"] if event["rule"] else "")
    return cycle


def evaluate_rule(rule: AlertRule, fleet: FleetRepository, stored: dict[SeriesKey, AlertState],
                  now: datetime, config: ServerConfig, cycle: Cycle) -> None:
    """Step every series of ``rule``: those with a value, then those that fell silent."""
    host = None if rule.host == ANY_HOST else rule.host
    values = fleet.latest(now - evaluation_window(config), name=rule.name, host=host,
                          labels=rule.labels)
    seen: set[SeriesKey] = set()
    for value in values:
        key = (rule.key, value.host, canonical_labels(value.labels))
        seen.add(key)
        previous = stored.get(key) or initial(rule.key, value.host, dict(value.labels), now)
        _advance(rule, previous, Observation(value.value, rule.holds(value.value)), now,
                 config, cycle)
    silent = [state for key, state in stored.items() if key[0] == rule.key and key not in seen]
    if host is not None and not seen and not silent:
        silent = [initial(rule.key, host, dict(rule.labels), now)]  # never reported yet
    for previous in silent:
        _advance(rule, previous, Observation(None), now, config, cycle)


def _advance(rule: AlertRule, previous: AlertState, seen: Observation, now: datetime,
             config: ServerConfig, cycle: Cycle) -> None:
    state, event = step(previous, seen, now, rule.for_, max_gap(config))
    cycle.alerts.append(state)
    if event is not None:
        cycle.events.append(event_payload(event, state.host, now, rule, state.value,
                                          state.labels))


def check_hosts(fleet: FleetRepository, config: ServerConfig, now: datetime,
                cycle: Cycle) -> None:
    """Queue ``host.down`` / ``host.recovered`` for hosts whose status crossed the line."""
    announced = {state.host: state.down for state in fleet.host_states()}
    for seen in fleet.last_seen():
        status = host_status(seen.last_seen, now, config.host_stale_after,
                             config.host_down_after)
        event = host_event(announced.get(seen.host, False), status)
        if event is not None:
            cycle.hosts.append(HostState(seen.host, status == HOST_DOWN, now))
            cycle.events.append(event_payload(event, seen.host, now))


def event_payload(event: str, host: str, now: datetime, rule: AlertRule | None = None,
                  value: float | None = None,
                  labels: Any = None) -> dict[str, Any]:
    """The generic webhook body: ``{"event","host","rule","value","at"}`` plus ``labels``."""
    return {"event": event, "host": host, "rule": rule.to_json() if rule else None,
            "value": value, "at": format_time(now), "labels": dict(labels or {})}


def _key(state: AlertState) -> SeriesKey:
    return state.rule_key, state.host, canonical_labels(state.labels)
