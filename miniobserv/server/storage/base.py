"""Repository protocols: the seam between the API and the stores (SPEC §7).

The API only ever sees these protocols; ``open_repositories`` in ``__init__`` picks the
PostgreSQL or SQLite implementation from the URL, and tests pass a fake.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol

from miniobserv.errors import MiniObservError
from miniobserv.model import LEVELS, LogBatch, MetricBatch

# Allowlists: the only values ever formatted into SQL text.
BUCKETS: Mapping[str, int] = {"10s": 10, "1m": 60, "5m": 300, "15m": 900, "1h": 3600,
                              "6h": 21600, "1d": 86400}
AGGREGATES: tuple[str, ...] = ("avg", "min", "max", "sum", "count", "last", "p50", "p95", "p99")
PERCENTILES: Mapping[str, float] = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


class StorageError(MiniObservError):
    """A store failed in a way the caller cannot fix by changing its request."""


class StorageUnavailable(StorageError):
    """The database cannot be reached; the API answers 503."""


@dataclass(frozen=True)
class MetricQuery:
    """A validated metrics query: one series name of one host over ``[start, end]``.

    ``labels`` are (key, value) pairs every matching point must carry; ``group_by`` splits
    the answer into one series per value of that label key (points without it are left out).
    """

    host: str
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

        A batch whose ``batch_id`` was stored before is acknowledged (same return value)
        without being stored again. Raises StorageUnavailable when the database is down.
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

    def hosts(self) -> list[str]:
        """Every host that ever sent an accepted batch, sorted."""
        ...


DEFAULT_LOG_LIMIT = 100
MAX_LOG_LIMIT = 1000


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

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LOG_LIMIT:
            raise ValueError(f"limit must be 1 to {MAX_LOG_LIMIT}, not {self.limit}")
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


class LogsRepository(Protocol):
    def insert_batch(self, batch: LogBatch) -> int:
        """Store the whole batch in one transaction, or nothing; return len(batch.entries).

        Entries get increasing ids in batch order. A batch whose ``batch_id`` was stored
        before (as logs) is acknowledged without being stored again. The host's
        ``last_seen`` is updated as for metrics. Raises StorageUnavailable when the database
        is down.
        """
        ...

    def query(self, query: LogQuery) -> LogPage:
        """Matching entries by descending id (newest first), at most ``query.limit``.

        Keyset paging: walking pages with ``cursor = next_cursor`` never returns an entry
        twice nor skips one, while entries stored after the walk began stay out of it (they
        have larger ids). ``next_cursor`` is None on the last page.
        """
        ...


class Repositories(Protocol):
    """Everything the server stores, opened once per process (after gunicorn's fork)."""

    @property
    def metrics(self) -> MetricsRepository:  # read-only, so implementations may narrow it
        ...

    @property
    def logs(self) -> LogsRepository: ...

    def ping(self) -> None:
        """Raise StorageUnavailable unless the database answers a trivial query now."""
        ...

    def close(self) -> None: ...
