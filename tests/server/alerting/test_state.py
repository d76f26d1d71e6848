"""The alert state machine over scripted sequences, and host status at its thresholds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from miniobserv.server.alerting.state import (
    Observation,
    host_event,
    host_status,
    initial,
    step,
)
from miniobserv.server.storage.base import AlertState

T0 = datetime(2026, 6, 5, 10, 0, tzinfo=UTC)
INTERVAL = timedelta(seconds=30)
MAX_GAP = 3 * INTERVAL
FOR = timedelta(minutes=1)
THRESHOLD = 90.0


def run(values: Sequence[float | None], for_: timedelta = FOR,
        start: AlertState | None = None) -> list[tuple[str, str | None, datetime]]:
    """Evaluate ``values`` one per interval (None: no data); (state, event, since) each."""
    current = start or initial("rule", "web-01", {}, T0)
    out = []
    for index, value in enumerate(values):
        now = T0 + index * INTERVAL
        seen = Observation(value, value is not None and value > THRESHOLD)
        current, event = step(current, seen, now, for_, MAX_GAP)
        out.append((current.state, event, current.since))
    return out


def at(index: int) -> datetime:
    return T0 + index * INTERVAL


def test_pending_then_firing_then_resolved() -> None:
    assert run([50, 95, 96, 97, 50, 40]) == [
        ("ok", None, at(0)),
        ("pending", None, at(1)),
        ("pending", None, at(1)),        # held 30 s of 60
        ("firing", "firing", at(3)),     # held 60 s: fires, once
        ("ok", "resolved", at(4)),
        ("ok", None, at(4)),
    ]


def test_firing_is_announced_once_however_long_it_lasts() -> None:
    events = [event for _, event, _ in run([95] * 10)]
    assert events.count("firing") == 1 and "resolved" not in events


def test_one_evaluation_below_restarts_the_for_period() -> None:
    states = [(s, e) for s, e, _ in run([95, 96, 50, 95, 96, 97])]
    assert states == [("pending", None), ("pending", None), ("ok", None), ("pending", None),
                      ("pending", None), ("firing", "firing")]


def test_for_zero_fires_at_the_first_evaluation() -> None:
    assert run([95], for_=timedelta(0)) == [("firing", "firing", at(0))]


def test_a_value_at_the_threshold_does_not_meet_a_strict_condition() -> None:
    assert run([90.0, 90.0, 90.0])[-1][0] == "ok"


def test_no_data_sends_nothing_and_the_alert_is_not_announced_again() -> None:
    result = run([95, 96, 97, None, None, 98, 99, 99, 50])
    assert result[3:5] == [("no_data", None, at(3)), ("no_data", None, at(3))]
    assert [s for s, _, _ in result[5:8]] == ["pending", "pending", "firing"]
    events = [e for _, e, _ in result if e]
    assert events == ["firing", "resolved"]  # firing again after no data: not re-sent


def test_no_data_then_ok_without_a_firing_event_sends_nothing() -> None:
    assert [e for _, e, _ in run([None, 50, 95, None, 50])] == [None] * 5


def test_pending_is_not_announced_and_no_data_breaks_the_run() -> None:
    result = run([95, None, 95, 96])
    assert [s for s, _, _ in result] == ["pending", "no_data", "pending", "pending"]
    assert result[2][2] == at(2)


def test_a_gap_longer_than_max_gap_restarts_pending() -> None:
    state, _ = step(initial("r", "h", {}, T0), Observation(95, True), T0, FOR, MAX_GAP)
    later = T0 + MAX_GAP + timedelta(seconds=1)
    state, event = step(state, Observation(95, True), later, FOR, MAX_GAP)
    assert (state.state, state.since, event) == ("pending", later, None)


def test_a_restart_keeps_firing_and_does_not_announce_again() -> None:
    stored = AlertState("rule", "web-01", {}, "firing", 95.0, at(0), at(0), "firing")
    assert run([96, 97], start=stored)[0][:2] == ("firing", None)
    restarted_late = [(s, e) for s, e, _ in run([96, 97, 98], start=stored)]
    assert ("firing", "firing") not in restarted_late


def test_values_and_times_are_kept() -> None:
    state, _ = step(initial("r", "h", {"core": "total"}, T0), Observation(91.5, True), at(1),
                    FOR, MAX_GAP)
    assert (state.value, state.updated_at, state.labels) == (91.5, at(1), {"core": "total"})
    state, _ = step(state, Observation(None), at(2), FOR, MAX_GAP)
    assert (state.value, state.updated_at) == (None, at(2))


# --- hosts --------------------------------------------------------------------------------

STALE, DOWN = timedelta(seconds=20), timedelta(seconds=50)


@pytest.mark.parametrize(("age", "status"), [
    (timedelta(0), "ok"), (STALE, "ok"), (STALE + timedelta(microseconds=1), "stale"),
    (DOWN, "stale"), (DOWN + timedelta(microseconds=1), "down"), (timedelta(days=3), "down"),
    (-timedelta(seconds=5), "ok"),  # a clock slightly ahead is still a host that reports
])
def test_host_status_thresholds(age: timedelta, status: str) -> None:
    assert host_status(T0 - age, T0, STALE, DOWN) == status


@pytest.mark.parametrize(("was_down", "status", "event"), [
    (False, "ok", None), (False, "stale", None), (False, "down", "host.down"),
    (True, "down", None), (True, "stale", "host.recovered"), (True, "ok", "host.recovered"),
])
def test_host_events(was_down: bool, status: str, event: str | None) -> None:
    assert host_event(was_down, status) == event
