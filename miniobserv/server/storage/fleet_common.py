"""Helpers shared by every fleet repository (PostgreSQL, SQLite and the test fake)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime

from miniobserv.server.storage.base import LatestValue

_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def canonical_labels(labels: Mapping[str, str]) -> str:
    """Labels as JSON text with sorted keys: one spelling per label set."""
    return _encode(dict(labels))


def merge_latest(values: Iterable[LatestValue]) -> list[LatestValue]:
    """One value per (host, name, labels): the newest, the greatest among equal times.

    Sorted by host, name and canonical labels, in code-point order, on every store.
    """
    best: dict[tuple[str, str, str], LatestValue] = {}
    for value in values:
        key = (value.host, value.name, canonical_labels(value.labels))
        kept = best.get(key)
        if kept is None or (value.time, value.value) > (kept.time, kept.value):
            best[key] = value
    return [best[key] for key in sorted(best)]


def outbox_status(delivered: bool, retry_at: datetime | None) -> str:
    """``sent``, ``pending`` (another attempt at ``retry_at``) or ``failed`` (given up)."""
    if delivered:
        return "sent"
    return "pending" if retry_at is not None else "failed"
