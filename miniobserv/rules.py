"""Alert rules and notification channels, parsed from ``ALERT_RULES`` / ``ALERT_NOTIFICATIONS``.

:class:`~miniobserv.config.ServerConfig` calls :func:`parse_alert_rules` and
:func:`parse_notifications` at start, so a typo stops the server with one line naming the
item and its field (``ALERT_RULES[2].op: ...``) instead of an alert that never fires. Keys are
lower-case, as written in SPEC §5; unknown keys are refused for the same reason.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from miniobserv.errors import ConfigError, ValidationError
from miniobserv.model import check_host, check_labels, is_metric_name
from miniobserv.units import DurationTooLong, excerpt, format_duration, parse_duration

ANY_HOST = "*"
OPERATORS: Mapping[str, Any] = {
    ">": lambda value, threshold: value > threshold,
    "<": lambda value, threshold: value < threshold,
    ">=": lambda value, threshold: value >= threshold,
    "<=": lambda value, threshold: value <= threshold,
}
NOTIFICATION_TYPES = ("webhook", "slack", "discord")
MAX_FOR = timedelta(days=7)

_RULE_KEYS = frozenset({"host", "name", "labels", "op", "threshold", "for"})
_NOTIFICATION_KEYS = frozenset({"type", "url"})
_T = TypeVar("_T")


@dataclass(frozen=True)
class AlertRule:
    """``host`` (or ``*``: every host reporting ``name``) ``name{labels} op threshold`` for ``for_``.

    ``labels`` select the series (a series matches when it carries every one of them); a
    rule is evaluated once per matching series.
    """

    host: str
    name: str
    op: str
    threshold: float
    for_: timedelta = timedelta(0)
    labels: tuple[tuple[str, str], ...] = ()

    def holds(self, value: float) -> bool:
        """True when ``value`` meets the condition (e.g. ``value > threshold``)."""
        return bool(OPERATORS[self.op](value, self.threshold))

    @property
    def key(self) -> str:
        """A stable identity for stored state: a digest of the whole definition."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def to_json(self) -> dict[str, Any]:
        """The rule as the API shows it: lower-case keys, ``for`` as text such as ``5m``."""
        return {"host": self.host, "name": self.name, "labels": dict(self.labels),
                "op": self.op, "threshold": self.threshold, "for": format_duration(self.for_)}

    def describe(self) -> str:
        """A readable one-liner: ``cpu.usage_pct{core=total} > 90 for 5m``."""
        labels = ",".join(f"{k}={v}" for k, v in self.labels)
        selector = f"{self.name}{{{labels}}}" if labels else self.name
        return f"{selector} {self.op} {self.threshold:g} for {format_duration(self.for_)}"


@dataclass(frozen=True)
class Notification:
    """Where events go: a generic JSON ``webhook``, a ``slack`` or a ``discord`` webhook."""

    type: str
    url: str = ""

    @property
    def key(self) -> str:
        """A stable identity (the URL may be a secret: never stored or logged as such)."""
        return hashlib.sha256(f"{self.type} {self.url}".encode()).hexdigest()[:16]

    def __repr__(self) -> str:  # the URL of a Slack or Discord webhook is a credential
        return f"Notification(type={self.type!r}, key={self.key!r})"


def parse_alert_rules(items: Sequence[Mapping[str, Any]],
                      variable: str = "ALERT_RULES") -> tuple[AlertRule, ...]:
    """Validate every rule; raise ConfigError naming ``ALERT_RULES[i].field``."""
    return _parse_each(items, parse_alert_rule, variable)


def parse_alert_rule(item: Mapping[str, Any]) -> AlertRule:
    """One rule; raise ValidationError naming the field."""
    _refuse_unknown(item, _RULE_KEYS)
    for key in ("host", "name", "op", "threshold"):
        if key not in item:
            raise ValidationError(key, "is required")
    host = check_host(item["host"])
    name = item["name"]
    if not isinstance(name, str) or not is_metric_name(name):
        raise ValidationError("name", f"unknown metric name {excerpt(name, 128)!r}")
    op = item["op"]
    if op not in OPERATORS:
        raise ValidationError("op", f"unknown operator {excerpt(op, 20)!r}: use one of "
                                    f"{', '.join(OPERATORS)}")
    labels = check_labels(item.get("labels"))
    return AlertRule(host=host, name=name, op=op, threshold=_threshold(item["threshold"]),
                     for_=_for(item.get("for", "0s")), labels=tuple(sorted(labels.items())))


def _refuse_unknown(item: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise ValidationError(str(unknown[0])[:40], f"unknown key (allowed: "
                                                    f"{', '.join(sorted(allowed))})")


def _threshold(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError("threshold", "must be a finite number")
    try:
        number = float(value)
    except OverflowError:  # an integer past float's range (JSON allows 4300 digits)
        raise ValidationError("threshold", "must be a finite number") from None
    if not math.isfinite(number):
        raise ValidationError("threshold", "must be a finite number")
    return number


def _for(value: Any) -> timedelta:
    if not isinstance(value, str):
        raise ValidationError("for", "must be a duration such as 30s, 5m or 1h")
    try:
        duration = parse_duration(value)
    except DurationTooLong:
        duration = timedelta.max  # refused below, naming the bound
    except ValueError:
        raise ValidationError("for", f"{excerpt(value)!r} is not a duration such as 30s, 5m or "
                                     "1h") from None
    if duration > MAX_FOR:
        raise ValidationError("for", f"must be at most {format_duration(MAX_FOR)}")
    return duration


def parse_notifications(items: Sequence[Mapping[str, Any]],
                        variable: str = "ALERT_NOTIFICATIONS") -> tuple[Notification, ...]:
    """Validate every channel; raise ConfigError naming ``ALERT_NOTIFICATIONS[i].field``."""
    return _parse_each(items, parse_notification, variable)


def _parse_each(items: Sequence[Mapping[str, Any]], parse: Callable[[Mapping[str, Any]], _T],
                variable: str) -> tuple[_T, ...]:
    """``parse`` every item; the first ValidationError becomes ``variable[i].field: ...``."""
    parsed = []
    for index, item in enumerate(items):
        try:
            parsed.append(parse(item))
        except ValidationError as err:
            raise ConfigError(f"{variable}[{index}].{err}") from None
    return tuple(parsed)


def parse_notification(item: Mapping[str, Any]) -> Notification:
    """One channel; raise ValidationError naming the field (the URL itself is not echoed)."""
    _refuse_unknown(item, _NOTIFICATION_KEYS)
    kind = item.get("type")
    if kind not in NOTIFICATION_TYPES:
        raise ValidationError("type", f"unknown notification type {excerpt(kind, 20)!r}: use one "
                                      f"of {', '.join(NOTIFICATION_TYPES)}")
    url = item.get("url")
    if not isinstance(url, str) or not is_http_url(url):
        raise ValidationError("url", "must be an http:// or https:// URL with a host")
    return Notification(type=kind, url=url)


def is_http_url(text: str) -> bool:
    """True for an ``http(s)://host[:port]/...`` URL without spaces."""
    if any(ch.isspace() for ch in text) or len(text) > 2048:
        return False
    try:
        parts = urlsplit(text)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port_ok
