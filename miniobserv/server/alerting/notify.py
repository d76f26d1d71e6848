"""Delivering queued events: generic JSON, Slack and Discord webhooks, with retries.

The outbox is read in order; each channel's items go out one after another, and an item that
is not yet due or just failed holds back the later items of its channel, so a ``resolved``
never overtakes its ``firing``. A failure (timeout, connection error, non-2xx answer) is
retried after ``RETRY_DELAYS_S``; after the last one the item is given up and logged as an
error. Each POST is bounded by the server's ``REQUEST_TIMEOUT`` (see :func:`json_poster`).
The URLs are credentials for Slack and Discord: they are never logged.

Each item is claimed before its POST (``FleetRepository.claim_notification``: one atomic
UPDATE setting a lease of :func:`claim_lease`) and its attempt recorded under that claim. So
two processes that both think they lead (a handover: the old leader lost its lock but is
still in its loop) never POST the same item, and an item another process holds holds back
its channel. A claimer that dies between its claim and the record leaves the item to the
next leader once the lease ends: delivery is at least once, and twice only when the claimer
died after the receiver got the POST and before the record committed (RELIABILITY.md).

Host names and label values come from whoever holds an ingest token, and Slack and Discord
read the text as markup: a host named ``<!channel>`` would ping a whole channel. So each
channel's text escapes them for its own markup (:func:`slack_escape`, :func:`discord_escape`),
and Discord is also told to ping no one (``allowed_mentions``). The generic webhook body is
JSON, not markup: it carries the values as they are.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import requests

from miniobserv.rules import Notification
from miniobserv.server.storage.base import FleetRepository, OutboxItem

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0  # ServerConfig's REQUEST_TIMEOUT default
RETRY_DELAYS_S: tuple[float, ...] = (2.0, 10.0, 30.0, 120.0)  # then the item is given up
LEASE_PER_TIMEOUT = 3  # a claim's lease, in REQUEST_TIMEOUTs (a POST takes at most ~1-2)
TITLES = {"firing": "FIRING", "resolved": "RESOLVED", "host.down": "HOST DOWN",
          "host.recovered": "HOST RECOVERED"}

Post = Callable[[str, Mapping[str, Any]], int]
Escape = Callable[[str], str]

SLACK_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}  # Slack's documented escaping
DISCORD_MARKDOWN = re.compile(r"([\\*_~`|>\[\]()])")
ZERO_WIDTH_SPACE = "\u200b"
NO_MENTIONS: Mapping[str, list[str]] = {"parse": []}  # Discord's allowed_mentions: nobody is pinged, whatever the text


def slack_escape(text: str) -> str:
    """``&``, ``<`` and ``>`` as entities, so no ``<!channel>``, ``<@U…>`` or ``<url|x>`` forms."""
    return "".join(SLACK_ENTITIES.get(char, char) for char in text)


def discord_escape(text: str) -> str:
    """Markdown escaped with backslashes; ``@`` and ``<`` broken by a zero-width space.

    The space after ``@`` stops ``@everyone`` and ``@here``; the one after ``<`` stops every
    ``<@id>``, ``<@&id>``, ``<#id>``, emoji and timestamp form.
    """
    escaped = DISCORD_MARKDOWN.sub(r"\\\1", text)
    return escaped.replace("@", "@" + ZERO_WIDTH_SPACE).replace("<", "<" + ZERO_WIDTH_SPACE)


def describe(payload: Mapping[str, Any], escape: Escape = str) -> str:
    """One readable line: ``[FIRING] web-01: cpu.usage_pct{core=total} > 90 for 5m (value 97.5)``.

    ``escape`` is applied to every part that is not ours: the host, the label keys and values
    and the rule's name.
    """
    title = TITLES.get(str(payload.get("event")), str(payload.get("event")).upper())
    line = f"[{title}] {escape(str(payload.get('host')))}"
    rule = payload.get("rule")
    if rule:
        labels = {**rule.get("labels", {}), **payload.get("labels", {})}
        selector = ",".join(f"{escape(k)}={escape(v)}" for k, v in sorted(labels.items()))
        line += f": {escape(rule['name'])}{{{selector}}} {rule['op']} {rule['threshold']:g} " \
                f"for {rule['for']}"
        if payload.get("value") is not None:
            line += f" (value {payload['value']:g})"
    return f"{line} at {payload.get('at')}"


def body_for(kind: str, payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """What to POST to a channel of ``kind``."""
    if kind == "slack":
        return {"text": describe(payload, slack_escape)}
    if kind == "discord":
        return {"content": describe(payload, discord_escape), "allowed_mentions": NO_MENTIONS}
    return payload


def post_json(url: str, body: Mapping[str, Any], timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    """POST ``body`` as JSON; the status code (raises requests errors).

    ``timeout_s`` bounds connecting and each wait for the receiver's answer (a receiver that
    never answers raises ``requests.Timeout``).
    """
    response = requests.post(url, json=body, timeout=timeout_s,
                             headers={"User-Agent": "miniobserv-alerting"})
    return response.status_code


def json_poster(timeout_s: float) -> Post:
    """A :data:`Post` that calls :func:`post_json` with ``timeout_s`` (``REQUEST_TIMEOUT``)."""

    def post(url: str, body: Mapping[str, Any]) -> int:
        return post_json(url, body, timeout_s)

    return post


def claim_lease(timeout_s: float) -> float:
    """The lease of a claim, in seconds, for POSTs bounded by ``timeout_s``.

    ``timeout_s`` bounds connecting and each wait for the answer, so a POST takes about one
    or two of them; three leave room for the record's commit. A POST that outlives its lease
    (a receiver trickling its answer) may be sent again by the next claimer.
    """
    return LEASE_PER_TIMEOUT * timeout_s


def claimer_token() -> str:
    """This process's claim token: host, pid and a random part (a pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class Deliverer:
    """Sends what the outbox holds to the configured channels."""

    def __init__(self, fleet: FleetRepository, channels: Sequence[Notification],
                 post: Post = post_json, *, lease_s: float = claim_lease(DEFAULT_TIMEOUT_S),
                 ) -> None:
        self._fleet = fleet
        self._channels = {channel.key: channel for channel in channels}
        self._post = post
        self.lease_s = lease_s
        self.claim = claimer_token()

    def deliver_due(self, now: datetime, stopping: Callable[[], bool] = lambda: False) -> int:
        """Attempt every due item whose channel is not held back; the number delivered.

        ``stopping`` is asked before each item: once it is true, the rest waits for the next
        process (shutdown then waits for one POST at most).
        """
        delivered = 0
        held: set[str] = set()
        for item in self._fleet.pending_notifications():
            if stopping():
                break
            if item.channel in held:
                continue
            if item.next_attempt_at > now or not self._fleet.claim_notification(
                    item.id, self.claim, self.lease_s):  # not due, or another's to deliver
                held.add(item.channel)
                continue
            if self._attempt(item, now):
                delivered += 1
            else:
                held.add(item.channel)
        return delivered

    def _attempt(self, item: OutboxItem, now: datetime) -> bool:
        channel = self._channels.get(item.channel)
        if channel is None:  # ALERT_NOTIFICATIONS changed since it was queued
            log.warning("alerting: dropping a %s event for a channel no longer configured",
                        item.payload.get("event"))
            self._fleet.finish_notification(item.id, now, delivered=False,
                                            error="channel no longer configured",
                                            claim=self.claim)
            return True
        error = self._send(channel, item.payload)
        if error is None:
            self._fleet.finish_notification(item.id, now, delivered=True, claim=self.claim)
            return True
        retry_at = retry_time(item.attempts, now)
        if retry_at is None:
            log.error("alerting: giving up a %s event to a %s channel after %d attempts: %s",
                      item.payload.get("event"), channel.type, item.attempts + 1, error)
        else:
            log.warning("alerting: %s channel failed (%s); retrying at %s", channel.type,
                        error, retry_at.isoformat())
        self._fleet.finish_notification(item.id, now, delivered=False, retry_at=retry_at,
                                        error=error, claim=self.claim)
        return False

    def _send(self, channel: Notification, payload: Mapping[str, Any]) -> str | None:
        try:
            status = self._post(channel.url, body_for(channel.type, payload))
        except requests.RequestException as err:
            return type(err).__name__
        return None if 200 <= status < 300 else f"HTTP {status}"


def retry_time(attempts_before: int, now: datetime) -> datetime | None:
    """When to try again after failed attempt number ``attempts_before + 1``; None: give up."""
    if attempts_before >= len(RETRY_DELAYS_S):
        return None
    return now + timedelta(seconds=RETRY_DELAYS_S[attempts_before])
