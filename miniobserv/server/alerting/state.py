"""The alert state machine and host status: pure functions of the previous state and now.

States of one rule on one series:

- ``ok``: the newest value does not meet the condition;
- ``pending``: it met the condition at every evaluation since ``since``, not yet for ``for``;
- ``firing``: it met the condition at every evaluation for at least ``for`` (``for`` 0 fires
  at the first evaluation that sees it);
- ``no_data``: no point of the series in the evaluation window.

Events: ``firing`` when a series enters firing and the last event sent for it was not
already ``firing``; ``resolved`` when it returns to ``ok`` after a ``firing`` event. A
``no_data`` spell in between sends nothing: the host.down event covers a silent host, and a
firing alert that comes back still firing is not announced twice. A pending run is broken
(it starts again) by no data, by a value that does not meet the condition, and by a gap
between evaluations longer than ``max_gap`` (no process evaluated: nobody saw it hold).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from miniobserv.server.storage.base import AlertState

OK, PENDING, FIRING, NO_DATA = "ok", "pending", "firing", "no_data"
HOST_OK, HOST_STALE, HOST_DOWN = "ok", "stale", "down"


@dataclass(frozen=True)
class Observation:
    """What one evaluation saw of one series: its newest value (None: no data)."""

    value: float | None
    holds: bool = False  # the condition, meaningful only with a value


def step(previous: AlertState, seen: Observation, now: datetime, for_: timedelta,
         max_gap: timedelta) -> tuple[AlertState, str | None]:
    """The next state of ``previous`` after evaluation ``seen`` at ``now``, and its event."""
    if seen.value is None:
        return _enter(previous, NO_DATA, None, now), None
    if not seen.holds:
        nxt = _enter(previous, OK, seen.value, now)
        if previous.last_notified == FIRING:
            return replace(nxt, last_notified="resolved"), "resolved"
        return nxt, None
    running = previous.state in (PENDING, FIRING) and now - previous.updated_at <= max_gap
    if running and previous.state == FIRING:
        return _enter(previous, FIRING, seen.value, now), None
    started = previous.since if running else now
    if now - started < for_:
        return replace(_enter(previous, PENDING, seen.value, now), since=started), None
    nxt = _enter(previous, FIRING, seen.value, now)
    if previous.last_notified == FIRING:
        return nxt, None  # announced before a restart or a no_data spell: not again
    return replace(nxt, last_notified=FIRING), FIRING


def _enter(previous: AlertState, state: str, value: float | None, now: datetime) -> AlertState:
    """``previous`` moved to ``state`` at ``now`` (``since`` kept when the state is unchanged)."""
    since = previous.since if previous.state == state else now
    return replace(previous, state=state, value=value, since=since, updated_at=now)


def initial(rule_key: str, host: str, labels: dict[str, str], now: datetime) -> AlertState:
    """The state of a series never evaluated before: ``ok`` with nothing sent."""
    return AlertState(rule_key=rule_key, host=host, labels=labels, state=OK, value=None,
                      since=now, updated_at=now)


def host_status(last_seen: datetime, now: datetime, stale_after: timedelta,
                down_after: timedelta) -> str:
    """``ok`` when seen within ``stale_after``, ``stale`` within ``down_after``, else ``down``.

    The boundaries belong to the better status: seen exactly ``stale_after`` ago is ``ok``.
    """
    age = now - last_seen
    if age <= stale_after:
        return HOST_OK
    if age <= down_after:
        return HOST_STALE
    return HOST_DOWN


def host_event(was_down: bool, status: str) -> str | None:
    """``host.down`` when a host becomes down, ``host.recovered`` when a down host reports."""
    if status == HOST_DOWN and not was_down:
        return "host.down"
    if status != HOST_DOWN and was_down:
        return "host.recovered"
    return None
