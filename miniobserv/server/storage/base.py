"""Repository protocols: the seam between the API and the stores (SPEC §7).

The API only ever sees these protocols; ``open_repositories`` in ``__init__`` picks the
PostgreSQL or SQLite implementation from the URL, and tests pass a fake.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from miniobserv.errors import MiniObservError
from miniobserv.model import LogBatch, MetricBatch

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


class LogsRepository(Protocol):
    def insert_batch(self, batch: LogBatch) -> int: ...


class Repositories(Protocol):
    """Everything the server stores, opened once per process (after gunicorn's fork)."""

    @property
    def metrics(self) -> MetricsRepository:  # read-only, so implementations may narrow it
        ...

    def ping(self) -> None:
        """Raise StorageUnavailable unless the database answers a trivial query now."""
        ...

    def close(self) -> None: ...
