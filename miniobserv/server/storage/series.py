"""Series ids and cardinality limits at ingest: the ``series`` and ``hosts`` tables.

Every store admits a batch the same way, inside the batch's own transaction (so a refused or
failed batch creates no series and no host), through :func:`admit` over a small
:class:`SeriesTransaction` that each store implements:

- a host absent from ``hosts`` is new: with ``MAX_HOSTS`` hosts already, the batch is refused
  (:class:`LimitExceeded` naming ``host``);
- the batch's distinct (name, labels) keys that this process's :class:`SeriesLedger` does not
  know as written within ``TOUCH_EVERY`` are looked up; when some are new, the host's series
  are counted (a range of the unique index on ``series(host, …)``) and a batch that would
  take the host past ``MAX_SERIES_PER_HOST`` is refused, naming the first metric over the
  limit; otherwise ONE upsert inserts the new series and refreshes ``last_seen`` of the rest,
  returning their ids;
- every key's series id comes back (the ledger caches them), for the samples the store then
  writes. A batch whose keys and host are all fresh in the ledger costs no statement here.

Race-free across processes: PostgreSQL takes transaction-scoped advisory locks (per host for
new series, one for new hosts) only when the batch brings something new; SQLite's
``BEGIN IMMEDIATE`` serialises writers already.

Decision (``last_seen``): refreshed at most once per ``TOUCH_EVERY`` (an hour) per series and
process, remembered by the ledger after commit, so a steady stream costs no write per batch.
A live series' ``last_seen`` therefore lags by up to an hour: retention removes series unseen
for ``METRICS_RETENTION`` plus ``TOUCH_EVERY``, so a host whose label values churn frees its
old series and is not blocked for ever.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from miniobserv.model import MetricBatch, PointColumns, to_micros
from miniobserv.server.storage.base import StorageError
from miniobserv.server.storage.fleet_common import SERIES_TOUCH_SLACK
from miniobserv.server.storage.shaping import canonical_labels

TOUCH_EVERY: timedelta = SERIES_TOUCH_SLACK
LEDGER_ENTRIES = 200_000  # per process; past it the least recently used are forgotten

SeriesKey = tuple[str, str]  # name, canonical labels text


@dataclass(frozen=True)
class Limits:
    """``MAX_SERIES_PER_HOST`` and ``MAX_HOSTS``."""

    max_series_per_host: int = 10_000
    max_hosts: int = 100_000

    def __post_init__(self) -> None:
        if self.max_series_per_host < 1 or self.max_hosts < 1:
            raise ValueError("limits must be positive")


class LimitExceeded(StorageError):
    """A batch would exceed a cardinality limit; nothing was stored. The API answers 400."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class SeriesLedger:
    """What this process wrote lately: keys, their series ids and when, bounded, least
    recently used first out. Hosts are remembered too, without an id."""

    def __init__(self, entries: int = LEDGER_ENTRIES) -> None:
        self._entries = entries
        self._written: OrderedDict[Hashable, tuple[int | None, datetime]] = OrderedDict()
        self._lock = threading.Lock()

    def fresh(self, key: Hashable, now: datetime) -> tuple[bool, int | None]:
        """``(True, id)`` when ``key`` was written within ``TOUCH_EVERY`` before ``now``."""
        with self._lock:
            entry = self._written.get(key)
            if entry is None:
                return False, None
            self._written.move_to_end(key)
            return now - entry[1] < TOUCH_EVERY, entry[0]

    def is_fresh(self, key: Hashable, now: datetime) -> bool:
        """True when ``key`` was written within ``TOUCH_EVERY`` before ``now``."""
        return self.fresh(key, now)[0]

    def remember(self, keys: Mapping[Hashable, int | None], now: datetime) -> None:
        """Record ``keys`` (with their series ids) as written at ``now``; call after the
        transaction committed."""
        with self._lock:
            for key, series_id in keys.items():
                self._written[key] = (series_id, now)
                self._written.move_to_end(key)
            while len(self._written) > self._entries:
                self._written.popitem(last=False)


class SeriesTransaction(Protocol):
    """The statements :func:`admit` needs, run in the batch's open transaction."""

    def has_host(self, host: str) -> bool: ...

    def count_hosts(self) -> int: ...

    def lock_hosts(self) -> None:
        """Serialise the creation of hosts until the transaction ends (no-op on SQLite)."""
        ...

    def existing(self, host: str, keys: Sequence[SeriesKey]) -> set[SeriesKey]: ...

    def count_series(self, host: str) -> int: ...

    def lock_host(self, host: str) -> None:
        """Serialise the creation of ``host``'s series until the transaction ends."""
        ...

    def upsert_series(self, host: str, keys: Sequence[SeriesKey],
                      now: datetime) -> Mapping[SeriesKey, int]:
        """Insert the missing ``keys`` and set ``last_seen`` of all to ``now``, ONE statement
        (``INSERT ... ON CONFLICT ... DO UPDATE ... RETURNING``); the series id of each key."""
        ...


@dataclass(frozen=True)
class Admission:
    """What :func:`admit` wrote; :meth:`remember` it in the ledger once committed."""

    host: str | None  # a host written (not fresh in the ledger), or None
    series: Mapping[tuple[str, str, str], int]  # the (host, name, labels) written: their ids
    ids: Mapping[SeriesKey, int]  # the series id of every key of the batch
    now: datetime

    def remember(self, ledger: SeriesLedger) -> None:
        written: dict[Hashable, int | None] = {key: sid for key, sid in self.series.items()}
        if self.host is not None:
            written[self.host] = None
        ledger.remember(written, self.now)


def batch_series(batch: MetricBatch) -> dict[SeriesKey, int]:
    """The batch's distinct series keys, each with the index of its first metric, in order."""
    return BatchSeries.of(batch).first


def point_keys(batch: MetricBatch) -> list[SeriesKey]:
    """The series key of each metric of the batch, in order."""
    series = BatchSeries.of(batch)
    keys = series.keys
    return [keys[slot] for slot in series.columns.slots]


@dataclass(frozen=True)
class BatchSeries:
    """A metric batch as every store writes it: its :class:`PointColumns` and the series
    key of each slot (``keys[columns.slots[i]]`` is point ``i``'s); ``first`` holds the
    distinct keys, each with the index of its first metric, in order (for :func:`admit`)."""

    columns: PointColumns
    keys: list[SeriesKey]
    first: dict[SeriesKey, int]

    @classmethod
    def of(cls, batch: MetricBatch) -> BatchSeries:
        """The API's batches come as columns already; records are put into columns here.

        Raises StorageError for a metric of another host than the batch's (the API refuses
        those; the series are the batch host's) or a value that is not a number.
        """
        columns = batch.metrics
        if not isinstance(columns, PointColumns) or columns.host != batch.host:
            columns = _columns(batch)
        keys = [(name, _canonical(labels)) for name, labels in columns.kinds]
        first: dict[SeriesKey, int] = {}
        for key, index in zip(keys, columns.firsts, strict=True):
            first.setdefault(key, index)  # slots are in order of first occurrence
        return cls(columns, keys, first)


def _columns(batch: MetricBatch) -> PointColumns:
    """The columns of a batch given as records (the API's come as columns already)."""
    host = batch.host
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    kinds: list[tuple[str, Mapping[str, str]]] = []
    firsts: list[int] = []
    times, values, slots = [], [], []
    for index, metric in enumerate(batch.metrics):
        if metric.host != host:
            raise StorageError(f"metrics[{index}].host: must equal the batch host")
        labels = metric.labels
        key = (metric.name, tuple(labels.items()) if labels else ())
        slot = seen.get(key)
        if slot is None:
            slot = seen[key] = len(kinds)
            kinds.append((metric.name, labels))
            firsts.append(index)
        try:
            values.append(float(metric.value))
        except (TypeError, ValueError) as err:  # an unvalidated record no store would accept
            raise StorageError(f"batch cannot be stored: {err}") from err
        times.append(to_micros(metric.time))
        slots.append(slot)
    return PointColumns(host, times, values, slots, kinds, firsts, rows=batch.metrics)


# Canonical label texts of the label sets this process met lately (a fleet has few),
# by their items in the order given; cleared when full.
_CANONICAL_ENTRIES = 10_000
_canonical_texts: dict[tuple[tuple[str, str], ...], str] = {}


def _canonical(labels: Mapping[str, str]) -> str:
    if not labels:
        return "{}"
    items = tuple(labels.items())
    text = _canonical_texts.get(items)
    if text is None:
        if len(_canonical_texts) >= _CANONICAL_ENTRIES:
            _canonical_texts.clear()
        text = _canonical_texts[items] = canonical_labels(labels)
    return text


def cached_ids(ledger: SeriesLedger, host: str, keys: Iterable[SeriesKey],
               now: datetime) -> dict[SeriesKey, int] | None:
    """Every key's series id when ``host`` and all ``keys`` are fresh in ``ledger``: then
    :func:`admit` has nothing to check or write, and the batch needs no statement for its
    series. None otherwise."""
    if not ledger.is_fresh(host, now):
        return None
    ids: dict[SeriesKey, int] = {}
    for key in keys:
        fresh, series_id = ledger.fresh((host, *key), now)
        if not fresh or series_id is None:
            return None
        ids[key] = series_id
    return ids


def admit(tx: SeriesTransaction, ledger: SeriesLedger, limits: Limits, host: str,
          keys: Mapping[SeriesKey, int], now: datetime) -> Admission:
    """Check the limits for ``host`` and its batch's ``keys``, register what is new, and
    give the series id of every key (:attr:`Admission.ids`): from the ledger for the keys
    written lately, from the one upsert for the others.

    Raises LimitExceeded (the caller's transaction then rolls back).
    """
    new_host = None if ledger.is_fresh(host, now) else _admit_host(tx, limits, host)
    ids: dict[SeriesKey, int] = {}
    stale: list[SeriesKey] = []
    for key in keys:
        fresh, series_id = ledger.fresh((host, *key), now)
        if fresh and series_id is not None:
            ids[key] = series_id
        else:
            stale.append(key)
    written: dict[tuple[str, str, str], int] = {}
    if stale:
        stale.sort()  # one lock order for every writer of these rows
        if set(stale) - tx.existing(host, stale):
            tx.lock_host(host)
            _check_room(tx, limits, host, keys, stale)
        upserted = tx.upsert_series(host, stale, now)
        for key in stale:
            ids[key] = written[(host, *key)] = upserted[key]
    return Admission(new_host, written, ids, now)


def _admit_host(tx: SeriesTransaction, limits: Limits, host: str) -> str:
    if not tx.has_host(host):
        tx.lock_hosts()
        if not tx.has_host(host) and tx.count_hosts() >= limits.max_hosts:
            raise LimitExceeded("host", f"{host} would exceed MAX_HOSTS "
                                        f"({limits.max_hosts} hosts)")
    return host


def _check_room(tx: SeriesTransaction, limits: Limits, host: str,
                keys: Mapping[SeriesKey, int], stale: Sequence[SeriesKey]) -> None:
    """Under the host's lock: refuse when the new series do not fit, naming the first over."""
    existing = tx.existing(host, stale)  # again: another process may have added some
    new = sorted((key for key in stale if key not in existing), key=keys.__getitem__)
    room = limits.max_series_per_host - tx.count_series(host)
    if len(new) > room:
        index = keys[new[max(room, 0)]]
        raise LimitExceeded(f"metrics[{index}]", f"host {host} would exceed "
                            f"MAX_SERIES_PER_HOST ({limits.max_series_per_host} series)")
