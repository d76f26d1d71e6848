"""Cardinality limits at ingest: the ``series`` and ``hosts`` tables, never ``metrics``.

Every store admits a batch the same way, inside the batch's own transaction (so a refused or
failed batch creates no series and no host), through :func:`admit` over a small
:class:`SeriesTransaction` that each store implements:

- a host absent from ``hosts`` is new: with ``MAX_HOSTS`` hosts already, the batch is refused
  (:class:`LimitExceeded` naming ``host``);
- the batch's distinct (name, labels) keys that this process's :class:`SeriesLedger` does not
  know as written within ``TOUCH_EVERY`` are looked up; when some are new, the host's series
  are counted (a range of the unique index on ``series(host, …)``) and a batch that would
  take the host past ``MAX_SERIES_PER_HOST`` is refused, naming the first metric over the
  limit; otherwise ONE upsert inserts the new series and refreshes ``last_seen`` of the rest.

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

from miniobserv.model import MetricBatch
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
    """What this process wrote lately: keys and when, bounded, least recently used first out."""

    def __init__(self, entries: int = LEDGER_ENTRIES) -> None:
        self._entries = entries
        self._written: OrderedDict[Hashable, datetime] = OrderedDict()
        self._lock = threading.Lock()

    def is_fresh(self, key: Hashable, now: datetime) -> bool:
        """True when ``key`` was written within ``TOUCH_EVERY`` before ``now``."""
        with self._lock:
            written = self._written.get(key)
            if written is None:
                return False
            self._written.move_to_end(key)
            return now - written < TOUCH_EVERY

    def remember(self, keys: Iterable[Hashable], now: datetime) -> None:
        """Record ``keys`` as written at ``now`` (call after the transaction committed)."""
        with self._lock:
            for key in keys:
                self._written[key] = now
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

    def upsert_series(self, host: str, keys: Sequence[SeriesKey], now: datetime) -> None:
        """Insert the missing ``keys`` and set ``last_seen`` of all to ``now``, ONE statement."""
        ...


@dataclass(frozen=True)
class Admission:
    """What :func:`admit` wrote; :meth:`remember` it in the ledger once committed."""

    host: str | None
    series: Sequence[tuple[str, str, str]]
    now: datetime

    def remember(self, ledger: SeriesLedger) -> None:
        ledger.remember([*self.series, *([] if self.host is None else [self.host])], self.now)


def batch_series(batch: MetricBatch) -> dict[SeriesKey, int]:
    """The batch's distinct series keys, each with the index of its first metric, in order."""
    keys: dict[SeriesKey, int] = {}
    for index, metric in enumerate(batch.metrics):
        keys.setdefault((metric.name, canonical_labels(metric.labels)), index)
    return keys


def admit(tx: SeriesTransaction, ledger: SeriesLedger, limits: Limits, host: str,
          keys: Mapping[SeriesKey, int], now: datetime) -> Admission:
    """Check the limits for ``host`` and its batch's ``keys``, register what is new.

    Raises LimitExceeded (the caller's transaction then rolls back).
    """
    new_host = None if ledger.is_fresh(host, now) else _admit_host(tx, limits, host)
    stale = sorted(key for key in keys if not ledger.is_fresh((host, *key), now))
    if stale:
        if set(stale) - tx.existing(host, stale):
            tx.lock_host(host)
            _check_room(tx, limits, host, keys, stale)
        tx.upsert_series(host, stale, now)
    return Admission(new_host, [(host, *key) for key in stale], now)


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
