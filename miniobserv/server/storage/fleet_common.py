"""Retention and outbox helpers shared by every fleet repository (PostgreSQL, SQLite, fake)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

RETENTION_CHUNK = 10_000  # rows per retention statement, each its own short transaction
# A series' last_seen is refreshed at most this often (storage.series.TOUCH_EVERY, which
# imports this module): retention waits this much longer before removing a series.
SERIES_TOUCH_SLACK = timedelta(hours=1)


def outbox_status(delivered: bool, retry_at: datetime | None) -> str:
    """``sent``, ``pending`` (another attempt at ``retry_at``) or ``failed`` (given up)."""
    if delivered:
        return "sent"
    return "pending" if retry_at is not None else "failed"


def expired_rows(metrics_before: datetime, logs_before: datetime,
                 outbox_before: datetime) -> list[tuple[str, str, datetime | None]]:
    """What the maintenance job deletes, in order: ``(table, condition, bound)``.

    ``{}`` in a condition is the place of ``bound`` (None: no parameter). Tables and
    conditions are constants. Hosts go before their host states, so a concurrent evaluation
    never sees a host without its announced state (which would announce host.down again).
    An alert state is expired with its host, or after ``no_data`` for the retention.
    """
    return [
        ("samples", "time < {}", metrics_before),
        ("logs", "time < {}", logs_before),
        ("ingested_batches", "received_at < {}", min(metrics_before, logs_before)),
        ("notification_outbox", "status <> 'pending' AND created_at < {}", outbox_before),
        ("series", "last_seen < {}", metrics_before - SERIES_TOUCH_SLACK),
        ("hosts", "last_seen < {}", metrics_before),
        ("host_states", "host NOT IN (SELECT host FROM hosts)", None),
        ("alert_states", "host NOT IN (SELECT host FROM hosts)"
                         " OR (state = 'no_data' AND since < {})", metrics_before),
    ]


def delete_in_chunks(delete_chunk: Callable[[int], int], should_stop: Callable[[], bool],
                     chunk: int = RETENTION_CHUNK) -> int:
    """Call ``delete_chunk(chunk)`` until it deletes fewer than ``chunk`` rows or
    ``should_stop()``; the total deleted."""
    deleted = 0
    while not should_stop():
        count = delete_chunk(chunk)
        deleted += count
        if count < chunk:
            break
    return deleted


def never() -> bool:
    """The default stop check: retention runs to its end."""
    return False
