"""Repository protocols: the seam between the API and the stores (SPEC §7).

The API only ever sees these protocols; ``open_repositories`` in ``__init__`` picks the
PostgreSQL or SQLite implementation from the URL, and tests pass a fake.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol
from uuid import UUID

from miniobserv.errors import MiniObservError
from miniobserv.model import EPOCH as EPOCH  # re-exported: the stores' time arithmetic
from miniobserv.model import LEVELS, LogBatch, MetricBatch
from miniobserv.model import MICROSECOND as MICROSECOND
from miniobserv.model import to_micros as to_micros

# Allowlists: the only values ever formatted into SQL text.
BUCKETS: Mapping[str, int] = {"10s": 10, "1m": 60, "5m": 300, "15m": 900, "1h": 3600,
                              "6h": 21600, "1d": 86400}
AGGREGATES: tuple[str, ...] = ("avg", "min", "max", "sum", "count", "last", "p50", "p95", "p99")
PERCENTILES: Mapping[str, float] = {"p50": 0.5, "p95": 0.95, "p99": 0.99}



# Labels are stored compact; points without labels skip the encoder entirely.
_encode_labels = json.JSONEncoder(separators=(",", ":")).encode


def labels_text(labels: Mapping[str, str]) -> str:
    """The ``labels`` column's text: compact JSON, ``{}`` when there are none."""
    return _encode_labels(labels) if labels else "{}"


class StorageError(MiniObservError):
    """A store failed in a way the caller cannot fix by changing its request."""


class StorageUnavailable(StorageError):
    """The database cannot be reached; the API answers 503."""


class BatchConflict(StorageError):
    """A ``batch_id`` was stored before with other content (reused by the client): 409."""

    def __init__(self, batch_id: UUID, kind: str) -> None:
        super().__init__(f"batch_id {batch_id} already used for a different {kind} batch")
        self.batch_id = batch_id
        self.kind = kind


HOST_GROUP = "host"  # group_by=host: one series per host (the host column, not a label)


@dataclass(frozen=True)
class MetricQuery:
    """A validated metrics query: one series name of one host over ``[start, end]``.

    ``labels`` are (key, value) pairs every matching point must carry; ``group_by`` splits
    the answer into one series per value of that label key (points without it are left out).
    ``host=None`` reads every host (fleet-wide: without ``group_by`` all hosts' points are
    aggregated as one series); ``group_by="host"`` (:data:`HOST_GROUP`) answers one series
    per host, labelled ``{"host": h}``, whatever labels the points carry.
    """

    host: str | None
    name: str
    start: datetime
    end: datetime
    bucket: str = "1m"
    agg: str = "avg"
    labels: tuple[tuple[str, str], ...] = ()
    group_by: str | None = None

    @property
    def bucket_seconds(self) -> int:
        return BUCKETS[self.bucket]

    @property
    def is_fleet_wide(self) -> bool:
        """True for a query over every host or grouped by host (the stores' fleet queries)."""
        return self.host is None or self.group_by == HOST_GROUP


TOP_ORDERS: tuple[str, ...] = ("desc", "asc")


@dataclass(frozen=True)
class TopQuery:
    """The hosts whose points of ``name`` (and ``labels``) in ``[start, end]`` have the
    highest (``desc``) or lowest (``asc``) ``agg`` over the whole range, at most ``limit``."""

    name: str
    start: datetime
    end: datetime
    agg: str = "avg"
    labels: tuple[tuple[str, str], ...] = ()
    limit: int = 10
    order: str = "desc"

    def __post_init__(self) -> None:
        if self.agg not in AGGREGATES or self.order not in TOP_ORDERS or self.limit < 1:
            raise ValueError(f"bad top query: agg={self.agg!r} order={self.order!r} "
                             f"limit={self.limit}")


@dataclass(frozen=True)
class HostValue:
    """One host and the aggregate of a :class:`TopQuery` over its points."""

    host: str
    value: float


def rank_hosts(values: Iterable[HostValue], query: TopQuery) -> list[HostValue]:
    """The first ``query.limit`` of ``values`` by value (``order``), ties by host name.

    Ranked here, not in SQL, so that every store orders alike (code-point host order).
    """
    sign = -1.0 if query.order == "desc" else 1.0
    return sorted(values, key=lambda v: (sign * v.value, v.host))[:query.limit]


@dataclass(frozen=True)
class Point:
    time: datetime  # bucket start, UTC
    value: float


@dataclass(frozen=True)
class Series:
    labels: Mapping[str, str] = field(default_factory=dict)
    points: Sequence[Point] = ()


class MetricsRepository(Protocol):
    def insert_batch(self, batch: MetricBatch) -> int:
        """Store the whole batch in one transaction, or nothing; return len(batch.metrics).

        A batch whose ``batch_id`` was stored before with the same content (see
        :mod:`~miniobserv.server.storage.claims`) is acknowledged (same return value) without
        being stored again; with other content it raises BatchConflict and stores nothing.
        Raises StorageUnavailable when the database is down.
        """
        ...

    def query(self, query: MetricQuery) -> list[Series]:
        """Buckets aligned to the UTC epoch, empty ones omitted, ascending time.

        Without ``group_by`` the answer is one Series with empty labels (no points when
        nothing matched); with it, one Series per label value, sorted by that value.
        ``last`` is the value of the newest point; among points sharing the newest time (one
        per core, say) the greatest value, so that every store answers alike.
        """
        ...

    def count_series(self, query: MetricQuery, limit: int) -> int:
        """How many series ``query`` answers with its ``group_by``, counting at most ``limit``.

        The distinct values of the ``group_by`` label among the points of host, name and
        label filters in ``[start, end]``, read without the points (``LIMIT limit``), so that
        the API can refuse a query too large before running it. 1 without ``group_by``.
        With ``group_by="host"``, the distinct hosts; with ``host=None``, over every host.
        """
        ...

    def hosts(self) -> list[str]:
        """Every host that ever sent an accepted batch, sorted."""
        ...

    def top(self, query: TopQuery) -> list[HostValue]:
        """:func:`rank_hosts` of every host with matching points: one aggregate per host over
        the whole range (``last``: the newest point, the greatest among equal times)."""
        ...

    def serves_from_rollup(self, query: MetricQuery) -> bool:
        """True when ``query`` would be answered from a rollup (a TimescaleDB continuous
        aggregate) rather than the raw points; the API then allows longer ranges."""
        ...


DEFAULT_LOG_LIMIT = 100
MAX_LOG_LIMIT = 1000
# A page holds at most this much message text (UTF-8), whatever its limit: 1000 entries of
# 64 KiB would be 64 MiB of answer. Always at least one entry, so paging always advances.
MAX_LOG_PAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class LogQuery:
    """A validated logs query; every filter is optional and they all must match.

    ``level`` matches one level exactly, ``min_level`` that level and the more severe ones
    (give one or neither). The window ``start <= time <= end`` is inclusive. ``search`` is a
    case-insensitive literal substring of the message (``%`` and ``_`` match themselves);
    case folding is ASCII's on SQLite and the fake, the database's ``lower()`` on PostgreSQL
    (ASCII only under the C locale, Unicode-aware under others). ``cursor`` is the
    ``next_cursor`` of the previous page: only entries with a smaller id are returned.
    """

    host: str | None = None
    level: str | None = None
    min_level: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    search: str | None = None
    limit: int = DEFAULT_LOG_LIMIT
    cursor: int | None = None
    max_bytes: int = MAX_LOG_PAGE_BYTES  # of message text per page

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LOG_LIMIT:
            raise ValueError(f"limit must be 1 to {MAX_LOG_LIMIT}, not {self.limit}")
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, not {self.max_bytes}")
        if self.cursor is not None and self.cursor < 1:
            raise ValueError(f"cursor must be positive, not {self.cursor}")
        if self.level is not None and self.min_level is not None:
            raise ValueError("give level or min_level, not both")
        for level in (self.level, self.min_level):
            if level is not None and level not in LEVELS:
                raise ValueError(f"unknown level {level!r}")

    def levels(self) -> tuple[str, ...] | None:
        """The levels an entry may have, or None when the level is not filtered."""
        if self.level is not None:
            return (self.level,)
        if self.min_level is not None:
            return LEVELS[LEVELS.index(self.min_level):]
        return None


@dataclass(frozen=True)
class LogRecord:
    """One stored log entry and the id that orders it (larger ids arrived later)."""

    id: int
    time: datetime  # UTC
    host: str
    level: str
    message: str
    path: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


class LogPage(NamedTuple):
    """One page of a logs query: entries newest first, and the cursor of the next page."""

    entries: Sequence[LogRecord]
    next_cursor: int | None  # the last entry's id when more entries match, else None


def log_page(records: Iterable[LogRecord], query: LogQuery) -> LogPage:
    """The page of ``records`` (matching, newest first, ``query.limit + 1`` when more match).

    Entries are taken while the page has fewer than ``query.limit`` and their messages fit
    in ``query.max_bytes`` (the first always does); ``next_cursor`` is the last entry's id
    when a matching entry was left out, so paging resumes without a skip or an overlap.
    Reads ``records`` no further than the entry after the page.
    """
    entries: list[LogRecord] = []
    size = 0
    for record in records:
        cost = len(record.message.encode())
        if len(entries) == query.limit or (entries and size + cost > query.max_bytes):
            return LogPage(entries, entries[-1].id)
        entries.append(record)
        size += cost
    return LogPage(entries, None)


class LogsRepository(Protocol):
    def insert_batch(self, batch: LogBatch) -> int:
        """Store the whole batch in one transaction, or nothing; return len(batch.entries).

        Entries get increasing ids in batch order. A batch whose ``batch_id`` was stored
        before (as logs) is acknowledged without being stored again when its content is the
        same, and raises BatchConflict (storing nothing) when it is not. The host's
        ``last_seen`` is updated as for metrics. Raises StorageUnavailable when the database
        is down.
        """
        ...

    def query(self, query: LogQuery) -> LogPage:
        """Matching entries by descending id (newest first), at most ``query.limit`` and,
        past the first, at most ``query.max_bytes`` of message text (:func:`log_page`).

        Keyset paging: walking pages with ``cursor = next_cursor`` never returns an entry
        twice nor skips one, while entries stored after the walk began stay out of it (they
        have larger ids). ``next_cursor`` is None on the last page.
        """
        ...


# --- fleet: hosts, latest values, alert state, notification outbox, maintenance ------------

ALERT_STATES: tuple[str, ...] = ("ok", "pending", "firing", "no_data")


@dataclass(frozen=True)
class HostSeen:
    """A host and the time the server last accepted a batch from it (UTC)."""

    host: str
    last_seen: datetime


@dataclass(frozen=True)
class LatestValue:
    """The newest raw point of one series (host, name, labels)."""

    host: str
    name: str
    labels: Mapping[str, str]
    time: datetime
    value: float


@dataclass(frozen=True)
class AlertState:
    """The stored state of one rule for one series; ``since`` is when ``state`` began.

    ``last_notified`` is the last event queued for it (``firing``/``resolved``), so a restart
    neither forgets a firing alert nor announces it again.
    """

    rule_key: str
    host: str
    labels: Mapping[str, str]
    state: str
    value: float | None
    since: datetime
    updated_at: datetime
    last_notified: str | None = None


@dataclass(frozen=True)
class HostState:
    """Whether a host was last announced down, and since when."""

    host: str
    down: bool
    since: datetime


@dataclass(frozen=True)
class Outgoing:
    """An event to deliver to one channel (``channel`` is a Notification key)."""

    channel: str
    payload: Mapping[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class OutboxItem:
    """A queued, undelivered item, as read back from the outbox."""

    id: int
    channel: str
    payload: Mapping[str, Any]
    attempts: int
    next_attempt_at: datetime


class LeaderLock(Protocol):
    """A lock held by at most one process of the whole deployment at a time."""

    def acquire(self) -> bool:
        """Take the lock without waiting, or confirm it is still held; True when held."""
        ...

    def release(self) -> None: ...


class FleetRepository(Protocol):
    """Hosts, latest values, alert state and the outbox: what alerting and dashboards read."""

    def last_seen(self) -> list[HostSeen]:
        """Every host with the time of its last accepted batch, sorted by host."""
        ...

    def latest(self, since: datetime, *, name: str | None = None, host: str | None = None,
               labels: Sequence[tuple[str, str]] = (),
               limit: int | None = None) -> list[LatestValue]:
        """The newest point of every series with a point at or after ``since``, in ONE query.

        Optional filters: one metric name, one host, labels every series must carry. Among
        points of the same newest time the greatest value wins. Sorted by host, name, labels.
        With ``limit``, at most ``limit`` series, not necessarily the first ones: enough to
        tell an answer too large (ask ``limit = cap + 1``) without reading all of it.
        """
        ...

    def alert_states(self) -> list[AlertState]: ...

    def host_states(self) -> list[HostState]: ...

    def save_cycle(self, alerts: Sequence[AlertState], hosts: Sequence[HostState],
                   outbox: Sequence[Outgoing], rule_keys: Sequence[str]) -> None:
        """Upsert states and queue deliveries in ONE transaction; forget other rules' states."""
        ...

    def pending_notifications(self, limit: int = 100) -> list[OutboxItem]:
        """Undelivered items, oldest first (due or not: a channel's order is kept)."""
        ...

    def claim_notification(self, item_id: int, claim: str, lease_s: float) -> bool:
        """Take a pending item for ``lease_s`` seconds under the token ``claim``; True when
        taken. False when it is no longer pending or another claim's lease has not ended:
        then someone else is delivering it. One atomic statement."""
        ...

    def finish_notification(self, item_id: int, now: datetime, *, delivered: bool,
                            retry_at: datetime | None = None, error: str | None = None,
                            claim: str | None = None) -> bool:
        """Record an attempt: delivered, to retry at ``retry_at``, or given up (neither),
        and release the claim. With ``claim``, only while that claim still holds the item
        (False otherwise: its lease ended and another claimer took it)."""
        ...

    def delete_expired(self, metrics_before: datetime, logs_before: datetime,
                       outbox_before: datetime, *,
                       should_stop: Callable[[], bool] | None = None) -> int:
        """Delete rows past retention where no TimescaleDB policy does it; the count.

        Also hosts not seen since ``metrics_before``, their host and alert states, alert
        states ``no_data`` since before it, and series unseen for longer (see
        ``fleet_common.expired_rows``). Deletes in bounded chunks, each its own short
        transaction, and returns early once ``should_stop()`` is true.
        """
        ...

    def pack_samples(self, before: datetime, *,
                     should_stop: Callable[[], bool] | None = None) -> int:
        """Pack samples of time windows wholly before ``before`` into compact blocks, where
        the store does (plain PostgreSQL, ``METRICS_PACK_AFTER``); the points packed. In
        bounded transactions, returning early once ``should_stop()`` is true; answers never
        change. 0 on the other stores (SQLite's rows are compact, TimescaleDB compresses)."""
        ...

    def leader_lock(self) -> LeaderLock:
        """A new handle on the deployment-wide alerting lock (not yet taken)."""
        ...


class Repositories(Protocol):
    """Everything the server stores, opened once per process (after gunicorn's fork)."""

    @property
    def metrics(self) -> MetricsRepository:  # read-only, so implementations may narrow it
        ...

    @property
    def logs(self) -> LogsRepository: ...

    @property
    def fleet(self) -> FleetRepository: ...

    def ping(self) -> None:
        """Raise StorageUnavailable unless the database answers a trivial query now."""
        ...

    def unbounded_statements(self) -> AbstractContextManager[None]:
        """Statements this thread runs inside the block are not cut by ``REQUEST_TIMEOUT``
        (background work such as retention); a no-op where nothing cuts them."""
        ...

    def sync_retention(self, retention: timedelta, table: str = "samples") -> bool:
        """Make a TimescaleDB retention policy on ``table`` (``samples`` or ``logs``) drop
        data past ``retention``; True when one does. False where the maintenance job
        enforces retention (plain PostgreSQL, SQLite, fakes)."""
        ...

    def close(self) -> None: ...
