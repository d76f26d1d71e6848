"""In-memory fakes of the storage protocols (``miniobserv.server.storage.base``).

``FakeMetricsRepository`` is a complete, correct implementation: the repository contract
suite runs over it as over SQLite and PostgreSQL, so handler tests built on it exercise the
same semantics as production, including the one-value-per-(series, time) rule: a later write
of the same series (host, name, labels in any order) and time replaces the value, the last
occurrence in a batch winning.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from miniobserv.model import LogBatch, LogEntry, Metric, MetricBatch
from miniobserv.server.storage.base import (
    HOST_GROUP,
    PERCENTILES,
    AlertState,
    HostSeen,
    HostState,
    HostValue,
    LatestValue,
    LogPage,
    LogQuery,
    LogRecord,
    MetricQuery,
    OutboxItem,
    Outgoing,
    Point,
    Series,
    StorageError,
    StorageUnavailable,
    TopQuery,
    log_page,
    rank_hosts,
)
from miniobserv.server.storage.claims import BatchClaim, logs_claim, metrics_claim
from miniobserv.server.storage.fleet_common import outbox_status
from miniobserv.server.storage.series import (
    TOUCH_EVERY,
    Limits,
    SeriesKey,
    SeriesLedger,
    admit,
    batch_series,
)
from miniobserv.server.storage.shaping import canonical_labels, merge_latest, percentile_cont

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def is_retry(claims: Mapping[uuid.UUID, bytes | None], claim: BatchClaim | None) -> bool:
    """True when ``claim`` repeats a stored one; BatchConflict when its digest differs.

    A stored digest of None stands for a claim made before digests (acknowledged always).
    """
    if claim is None or claim.batch_id not in claims:
        return False
    claim.check_retry(claims[claim.batch_id])
    return True


@dataclass(frozen=True)
class _Row:
    metric: Metric
    seq: int  # insertion order of the write that set the value


SampleKey = tuple[str, str, str, datetime]  # host, name, canonical labels, time (UTC)


def sample_key(metric: Metric) -> SampleKey:
    """The (series, time) a point is stored under: one value each."""
    return (metric.host, metric.name, canonical_labels(metric.labels),
            metric.time.astimezone(UTC))


class FakeMetricsRepository:
    """Metrics kept in a dict by (series, time); raises StorageUnavailable while ``down``."""

    def __init__(self) -> None:
        self.samples: dict[SampleKey, _Row] = {}
        self._seq = 0
        self.batch_ids: dict[uuid.UUID, bytes | None] = {}  # the claims: id -> digest
        self._write_lock = threading.Lock()
        self.host_names: set[str] = set()
        self.down = False
        self.fail_after: int | None = None  # raise StorageError after staging this many rows
        self.insert_calls = 0
        self.host_seen: dict[str, datetime] = {}  # the hosts table: last accepted batch
        self.rollup = False  # what serves_from_rollup answers
        self.limits = Limits()
        self.ledger = SeriesLedger()
        self.series: dict[tuple[str, str, str], datetime] = {}  # the series table: last_seen
        self.series_ids: dict[tuple[str, str, str], int] = {}  # ids handed out, never reused

    def series_id(self, key: tuple[str, str, str]) -> int:
        """The id of series ``key`` (a new one the first time)."""
        return self.series_ids.setdefault(key, len(self.series_ids) + 1)

    def _check_up(self) -> None:
        if self.down:
            raise StorageUnavailable("fake store is down")

    def insert_batch(self, batch: MetricBatch) -> int:
        """All or nothing; a known ``batch_id`` is acknowledged without storing twice, or
        raises BatchConflict when it came with other content."""
        self._check_up()
        self.insert_calls += 1
        with self._write_lock:  # one writer at a time, as a transaction would
            claim = metrics_claim(batch)
            if is_retry(self.batch_ids, claim):
                return len(batch.metrics)
            tx = self.admit(batch.host, batch_series(batch))
            staged = [_Row(_checked(metric), self._seq + i)
                      for i, metric in enumerate(self._stage(batch.metrics))]
            tx.commit()
            self._seq += len(staged)
            for row in staged:  # in batch order: the last occurrence wins
                self.samples[sample_key(row.metric)] = row
            self.host_names.add(batch.host)
            self.host_seen[batch.host] = datetime.now(UTC)
            if claim is not None:
                self.batch_ids[claim.batch_id] = claim.digest
            return len(batch.metrics)

    def admit(self, host: str, keys: Mapping[SeriesKey, int]) -> FakeSeriesTransaction:
        """Check the limits as the SQL stores do; ``commit()`` the result once stored."""
        tx = FakeSeriesTransaction(self)
        tx.admission = admit(tx, self.ledger, self.limits, host, keys, datetime.now(UTC))
        return tx

    def _stage(self, metrics: Sequence[Metric]) -> Iterable[Metric]:
        for index, metric in enumerate(metrics):
            if self.fail_after is not None and index >= self.fail_after:
                raise StorageError(f"fake failure after {self.fail_after} rows")
            yield metric

    def query(self, query: MetricQuery) -> list[Series]:
        """Epoch-aligned buckets, empty ones omitted, ascending; one series per group."""
        self._check_up()
        groups: dict[str, list[_Row]] = defaultdict(list)
        for row in self.samples.values():
            if _matches(row.metric, query):
                groups[_group_key(row.metric, query.group_by)].append(row)
        if query.group_by is None:
            return [Series(labels={}, points=_bucketed(groups.get("", []), query))]
        return [Series(labels={query.group_by: value}, points=_bucketed(groups[value], query))
                for value in sorted(groups)]

    def count_series(self, query: MetricQuery, limit: int) -> int:
        """Distinct ``group_by`` values of the matching points, at most ``limit``."""
        self._check_up()
        if query.group_by is None:
            return 1
        values = {_group_key(row.metric, query.group_by) for row in self.samples.values()
                  if _matches(row.metric, query)}
        return min(len(values), limit)

    def top(self, query: TopQuery) -> list[HostValue]:
        """Every host's aggregate over the whole range, ranked by :func:`rank_hosts`."""
        self._check_up()
        hosts: dict[str, list[_Row]] = defaultdict(list)
        window = MetricQuery(None, query.name, query.start, query.end, labels=query.labels)
        for row in self.samples.values():
            if _matches(row.metric, window):
                hosts[row.metric.host].append(row)
        return rank_hosts((HostValue(host, aggregate(query.agg, rows))
                           for host, rows in hosts.items()), query)

    def hosts(self) -> list[str]:
        self._check_up()
        return sorted(self.host_names)

    def serves_from_rollup(self, query: MetricQuery) -> bool:
        """``self.rollup`` (False: like SQLite, no rollups; handler tests set it), never for
        fleet-wide queries (as PostgreSQL: they read raw points)."""
        self._check_up()
        return self.rollup and not query.is_fleet_wide

    @property
    def rows(self) -> list[_Row]:
        """Every stored sample, in the order its (series, time) was first written."""
        return list(self.samples.values())

    def stored(self) -> list[Metric]:
        """Everything stored, in insertion order (for assertions)."""
        return [row.metric for row in self.samples.values()]


class FakeSeriesTransaction:
    """:class:`~miniobserv.server.storage.series.SeriesTransaction` over the fake's dicts,
    writing only at :meth:`commit` (a refused or failed batch leaves no series behind)."""

    def __init__(self, repo: FakeMetricsRepository) -> None:
        self._repo = repo
        self._pending: dict[tuple[str, str, str], datetime] = {}
        self.admission: Any = None

    def has_host(self, host: str) -> bool:
        return host in self._repo.host_seen

    def count_hosts(self) -> int:
        return len(self._repo.host_seen)

    def lock_hosts(self) -> None:
        pass  # the repository's write lock is held

    def existing(self, host: str, keys: Sequence[SeriesKey]) -> set[SeriesKey]:
        return {key for key in keys if (host, *key) in self._repo.series}

    def count_series(self, host: str) -> int:
        return sum(1 for key in self._repo.series if key[0] == host)

    def lock_host(self, host: str) -> None:
        pass

    def upsert_series(self, host: str, keys: Sequence[SeriesKey],
                      now: datetime) -> dict[SeriesKey, int]:
        self._pending.update(((host, *key), now) for key in keys)
        return {key: self._repo.series_id((host, *key)) for key in keys}

    def commit(self) -> None:
        self._repo.series.update(self._pending)
        self.admission.remember(self._repo.ledger)


def _checked(metric: Metric) -> Metric:
    """Refuse what a real table would refuse (naive time, non-finite value, NUL text)."""
    texts = [metric.host, metric.name, *metric.labels, *metric.labels.values()]
    if metric.time.tzinfo is None or not math.isfinite(metric.value) or \
            any("\x00" in text for text in texts):
        raise StorageError("row refused by the fake store")
    return Metric(time=metric.time, host=metric.host, name=metric.name,
                  value=float(metric.value), labels=dict(metric.labels))


def _matches(metric: Metric, query: MetricQuery) -> bool:
    if query.host not in (None, metric.host) or metric.name != query.name:
        return False
    if not query.start <= metric.time <= query.end:
        return False
    if any(metric.labels.get(key) != value for key, value in query.labels):
        return False
    return query.group_by in (None, HOST_GROUP) or query.group_by in metric.labels


def _group_key(metric: Metric, group_by: str | None) -> str:
    """The series a matching point belongs to: its host, its ``group_by`` label, or ""."""
    if group_by == HOST_GROUP:
        return metric.host
    return "" if group_by is None else metric.labels[group_by]


def bucket_start(time: datetime, width_s: int) -> datetime:
    """``floor(epoch_seconds / width) * width`` as an aware UTC datetime (exact, no floats)."""
    micros = (time - EPOCH) // MICROSECOND
    return EPOCH + timedelta(seconds=micros // (width_s * 1_000_000) * width_s)


def _bucketed(rows: list[_Row], query: MetricQuery) -> list[Point]:
    buckets: dict[datetime, list[_Row]] = defaultdict(list)
    for row in rows:
        buckets[bucket_start(row.metric.time, query.bucket_seconds)].append(row)
    return [Point(time=start, value=aggregate(query.agg, buckets[start]))
            for start in sorted(buckets)]


def aggregate(agg: str, rows: list[_Row]) -> float:
    """One bucket's value; ``last`` is the newest point (the greatest value among equal times,
    as the SQL stores do)."""
    values = [row.metric.value for row in rows]
    if agg == "avg":
        return math.fsum(values) / len(values)
    if agg == "min":
        return min(values)
    if agg == "max":
        return max(values)
    if agg == "sum":
        return math.fsum(values)
    if agg == "count":
        return float(len(values))
    if agg == "last":
        return max(rows, key=lambda row: (row.metric.time, row.metric.value)).metric.value
    if agg in PERCENTILES:
        return percentile_cont(sorted(values), PERCENTILES[agg])
    raise ValueError(f"unknown aggregate {agg!r}")


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold_ascii(text: str) -> str:
    """Lower-case ASCII letters only, as SQLite's ``lower()`` (and PostgreSQL's in C locale)."""
    return text.translate(_ASCII_LOWER)


class FakeLogsRepository:
    """Log entries kept in a list, ids from a counter; raises StorageUnavailable while ``down``.

    ``touch(host)`` is called for each accepted batch: the SQL stores keep one table of hosts
    for both kinds. Batch ids are per kind, as in the SQL stores' ``(batch_id, kind)`` key.
    """

    def __init__(self, touch: Callable[[str], None] | None = None,
                 admit_host: Callable[[str], Any] | None = None) -> None:
        self.rows: list[LogRecord] = []
        self._admit_host = admit_host
        self.batch_ids: dict[uuid.UUID, bytes | None] = {}  # the claims: id -> digest
        self._write_lock = threading.Lock()
        self.host_names: set[str] = set()
        self._touch = touch or self.host_names.add
        self.down = False
        self.fail_after: int | None = None  # raise StorageError after staging this many rows
        self.insert_calls = 0
        self._last_id = 0

    def _check_up(self) -> None:
        if self.down:
            raise StorageUnavailable("fake store is down")

    def insert_batch(self, batch: LogBatch) -> int:
        """All or nothing; a known ``batch_id`` is acknowledged without storing twice, or
        raises BatchConflict when it came with other content."""
        self._check_up()
        self.insert_calls += 1
        with self._write_lock:  # one writer at a time, as a transaction would
            claim = logs_claim(batch)
            if is_retry(self.batch_ids, claim):
                return len(batch.entries)
            tx = self._admit_host(batch.host) if self._admit_host is not None else None
            staged = []
            for index, entry in enumerate(batch.entries):
                if self.fail_after is not None and index >= self.fail_after:
                    raise StorageError(f"fake failure after {self.fail_after} rows")
                staged.append(_log_record(self._last_id + index + 1, entry))
            if tx is not None:
                tx.commit()
            self.rows.extend(staged)
            self._last_id += len(staged)
            self._touch(batch.host)
            if claim is not None:
                self.batch_ids[claim.batch_id] = claim.digest
            return len(batch.entries)

    def query(self, query: LogQuery) -> LogPage:
        """Newest first by id, at most ``limit``; ``next_cursor`` when more match."""
        self._check_up()
        return log_page((row for row in reversed(self.rows) if _log_matches(row, query)), query)

    def stored(self) -> list[LogRecord]:
        """Everything stored, in insertion order (for assertions)."""
        return list(self.rows)


def _log_record(log_id: int, entry: LogEntry) -> LogRecord:
    """Refuse what a real table would refuse (naive time, NUL text)."""
    texts = [entry.host, entry.level, entry.message, entry.path or "", *entry.labels,
             *entry.labels.values()]
    if entry.time.tzinfo is None or not all(isinstance(text, str) for text in texts) or \
            any("\x00" in text for text in texts):
        raise StorageError("row refused by the fake store")
    return LogRecord(id=log_id, time=entry.time.astimezone(UTC), host=entry.host,
                     level=entry.level, message=entry.message, path=entry.path,
                     labels=dict(entry.labels))


def _log_matches(row: LogRecord, query: LogQuery) -> bool:
    levels = query.levels()
    return ((query.cursor is None or row.id < query.cursor)
            and (query.host is None or row.host == query.host)
            and (levels is None or row.level in levels)
            and (query.start is None or row.time >= query.start)
            and (query.end is None or row.time <= query.end)
            and (not query.search or fold_ascii(query.search) in fold_ascii(row.message)))


class FakeRepositories:
    """The ``Repositories`` of a test: in-memory metrics and logs, and a ``down`` switch."""

    def __init__(self) -> None:
        self.metrics = FakeMetricsRepository()
        self.logs = FakeLogsRepository(self._touch_host,
                                       lambda host: self.metrics.admit(host, {}))
        self.fleet = FakeFleet(self.metrics)
        self.closed = False
        self.pings = 0

    @property
    def down(self) -> bool:
        return self.metrics.down

    @down.setter
    def down(self, value: bool) -> None:
        self.metrics.down = value
        self.logs.down = value
        self.fleet.down = value

    def _touch_host(self, host: str) -> None:
        """What the SQL stores' ``hosts`` upsert does when a logs batch is accepted."""
        self.metrics.host_names.add(host)
        self.metrics.host_seen[host] = datetime.now(UTC)

    def ping(self) -> None:
        self.pings += 1
        if self.down:
            raise StorageUnavailable("fake store is down")

    def unbounded_statements(self) -> AbstractContextManager[None]:
        return nullcontext()  # nothing cuts the fake's statements

    def sync_retention(self, retention: timedelta, table: str = "samples") -> bool:
        """Always False: the maintenance job enforces retention, as on SQLite."""
        return False

    def close(self) -> None:
        self.closed = True


# --- fleet ----------------------------------------------------------------------------------

_LEADERS: dict[int, threading.Lock] = {}  # one lock per FakeFleet, shared by its handles


@dataclass
class _OutboxRow:
    item: OutboxItem
    status: str = "pending"
    created_at: datetime = EPOCH
    error: str | None = None
    claimed_by: str | None = None
    claimed_until: float = 0.0  # time.time() when the lease ends


class FakeFleet:
    """Hosts, newest values, alert state and outbox over the metrics fake; ``down`` switch."""

    def __init__(self, metrics: FakeMetricsRepository) -> None:
        self.metrics = metrics
        self.states: dict[tuple[str, str, str], AlertState] = {}
        self.hosts: dict[str, HostState] = {}
        self.outbox: list[_OutboxRow] = []
        self.down = False
        self.cycles = 0
        _LEADERS[id(self)] = threading.Lock()

    def _check_up(self) -> None:
        if self.down:
            raise StorageUnavailable("fake store is down")

    def last_seen(self) -> list[HostSeen]:
        self._check_up()
        return [HostSeen(host, seen) for host, seen in sorted(self.metrics.host_seen.items())]

    def latest(self, since: datetime, *, name: str | None = None, host: str | None = None,
               labels: Sequence[tuple[str, str]] = (),
               limit: int | None = None) -> list[LatestValue]:
        self._check_up()
        return merge_latest(
            LatestValue(m.host, m.name, dict(m.labels), m.time, m.value)
            for m in self.metrics.stored()
            if m.time >= since and name in (None, m.name) and host in (None, m.host)
            and all(m.labels.get(key) == value for key, value in labels))[:limit]

    def alert_states(self) -> list[AlertState]:
        self._check_up()
        return list(self.states.values())

    def host_states(self) -> list[HostState]:
        self._check_up()
        return list(self.hosts.values())

    def save_cycle(self, alerts: Sequence[AlertState], hosts: Sequence[HostState],
                   outbox: Sequence[Outgoing], rule_keys: Sequence[str]) -> None:
        self._check_up()
        self.cycles += 1
        self.states = {key: state for key, state in self.states.items() if key[0] in rule_keys}
        for alert in alerts:
            key = (alert.rule_key, alert.host, canonical_labels(alert.labels))
            self.states[key] = alert
        self.hosts.update((host.host, host) for host in hosts)
        for out in outbox:
            item = OutboxItem(len(self.outbox) + 1, out.channel, json.loads(
                json.dumps(out.payload)), 0, out.created_at)
            self.outbox.append(_OutboxRow(item, created_at=out.created_at))

    def pending_notifications(self, limit: int = 100) -> list[OutboxItem]:
        self._check_up()
        return [row.item for row in self.outbox if row.status == "pending"][:limit]

    def claim_notification(self, item_id: int, claim: str, lease_s: float) -> bool:
        self._check_up()
        row = self.outbox[item_id - 1]
        if row.status != "pending" or (row.claimed_by and row.claimed_until > time.time()):
            return False
        row.claimed_by, row.claimed_until = claim, time.time() + lease_s
        return True

    def finish_notification(self, item_id: int, now: datetime, *, delivered: bool,
                            retry_at: datetime | None = None, error: str | None = None,
                            claim: str | None = None) -> bool:
        self._check_up()
        row = self.outbox[item_id - 1]
        if claim is not None and row.claimed_by != claim:
            return False
        row.claimed_by, row.claimed_until = None, 0.0
        row.status = outbox_status(delivered, retry_at)
        row.error = error
        row.item = replace(row.item, attempts=row.item.attempts + 1,
                           next_attempt_at=retry_at or row.item.next_attempt_at)
        return True

    def delete_expired(self, metrics_before: datetime, logs_before: datetime,
                       outbox_before: datetime, *,
                       should_stop: Callable[[], bool] | None = None) -> int:
        """As the SQL stores (fleet_common.expired_rows), in one step."""
        self._check_up()
        metrics = self.metrics
        before = len(metrics.samples) + len(self.outbox) + len(metrics.series) + \
            len(metrics.host_seen) + len(self.hosts) + len(self.states)
        metrics.samples = {key: row for key, row in metrics.samples.items()
                           if row.metric.time >= metrics_before}
        self.outbox = [row for row in self.outbox
                       if row.status == "pending" or row.created_at >= outbox_before]
        metrics.series = {key: seen for key, seen in metrics.series.items()
                          if seen >= metrics_before - TOUCH_EVERY}
        metrics.host_seen = {host: seen for host, seen in metrics.host_seen.items()
                             if seen >= metrics_before}
        metrics.host_names &= set(metrics.host_seen)
        self.hosts = {host: state for host, state in self.hosts.items()
                      if host in metrics.host_seen}
        self.states = {key: state for key, state in self.states.items()
                       if state.host in metrics.host_seen
                       and not (state.state == "no_data" and state.since < metrics_before)}
        return before - len(metrics.samples) - len(self.outbox) - len(metrics.series) - \
            len(metrics.host_seen) - len(self.hosts) - len(self.states)

    def pack_samples(self, before: datetime, *,
                     should_stop: Callable[[], bool] | None = None) -> int:
        return 0  # one dict entry per point: nothing to pack

    def leader_lock(self) -> FakeLeaderLock:
        return FakeLeaderLock(_LEADERS[id(self)])

    def sent(self) -> list[Mapping[str, Any]]:
        """Payloads delivered so far (for assertions)."""
        return [row.item.payload for row in self.outbox if row.status == "sent"]


class FakeLeaderLock:
    """A handle on the fake's one leader lock: at most one handle holds it at a time."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._held = False

    def acquire(self) -> bool:
        if not self._held:
            self._held = self._lock.acquire(blocking=False)
        return self._held

    def release(self) -> None:
        if self._held:
            self._held = False
            self._lock.release()
