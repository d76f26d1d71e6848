"""The background work of a server process: evaluation, delivery and retention.

Every process (each gunicorn worker, ``miniobserv serve``, the demo) starts an
:class:`AlertingService`; only the one holding the deployment-wide leader lock (a PostgreSQL
advisory lock, a file lock next to a SQLite database) works, the others try again at each
interval. The leader evaluates every ``ALERT_INTERVAL`` in one thread and delivers queued
events in another, so a slow webhook never delays an evaluation. The same leader enforces
retention every ``RETENTION_EVERY`` on stores without TimescaleDB policies, in a third
thread of its own: a long delete (a backlog, a slow disk) never stalls an evaluation, and it
stops between chunks when the process stops or loses the lead.

``REQUEST_TIMEOUT`` bounds each webhook POST; ``SHUTDOWN_TIMEOUT`` bounds :meth:`stop`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from miniobserv.config import ServerConfig
from miniobserv.server.alerting.evaluate import run_cycle
from miniobserv.server.alerting.notify import Deliverer, Post, claim_lease, json_poster
from miniobserv.server.storage.base import LeaderLock, Repositories, StorageError

log = logging.getLogger(__name__)

RETENTION_EVERY = timedelta(minutes=5)
OUTBOX_KEPT = timedelta(days=7)  # delivered or given-up notifications, for inspection
DELIVERY_POLL_S = 1.0  # the sender also wakes at once when a cycle queued something

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class AlertingService:
    """Three daemon threads, stopped by :meth:`stop` (also registered at process exit)."""

    def __init__(self, config: ServerConfig, repos: Repositories, *, clock: Clock = utc_now,
                 post: Post | None = None) -> None:
        """``post`` defaults to a JSON POST bounded by ``config.request_timeout``."""
        self.config = config
        self.repos = repos
        self.clock = clock
        timeout_s = config.request_timeout.total_seconds()
        self.deliverer = Deliverer(repos.fleet, config.alert_notifications,
                                   post or json_poster(timeout_s),
                                   lease_s=claim_lease(timeout_s))
        self.lock: LeaderLock = repos.fleet.leader_lock()
        self.leading = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._next_retention: datetime | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> AlertingService:
        for target, name in ((self._evaluate_loop, "alerting"), (self._deliver_loop, "notify"),
                             (self._retention_loop, "retention")):
            thread = threading.Thread(target=target, name=f"miniobserv-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the threads and give the leader lock up; True when all ended in time.

        ``timeout`` (seconds; default ``SHUTDOWN_TIMEOUT``) bounds the whole wait. A thread
        still busy then, say in a webhook POST, is logged and left behind (it is a daemon).
        """
        limit = self.config.shutdown_timeout.total_seconds() if timeout is None else timeout
        deadline = time.monotonic() + limit
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        busy = [thread.name for thread in self._threads if thread.is_alive()]
        if busy:
            log.warning("alerting: %s still busy after %.1fs; not waiting longer",
                        ", ".join(busy), limit)
        self.lock.release()
        self.leading.clear()
        return not busy

    def _evaluate_loop(self) -> None:
        interval = self.config.alert_interval.total_seconds()
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(interval)

    def tick(self) -> None:
        """One interval: take or keep the lead, then evaluate."""
        if not self.lock.acquire():
            if self.leading.is_set():
                log.warning("alerting: no longer the leader")
            self.leading.clear()
            return
        if not self.leading.is_set():
            log.info("alerting: this process leads evaluation (%d rules, %d channels)",
                     len(self.config.alert_rules), len(self.config.alert_notifications))
            self._next_retention = None
            self.leading.set()
        self._guarded("evaluation", self._evaluate)

    def _evaluate(self) -> None:
        if run_cycle(self.repos.fleet, self.config, self.clock()).events:
            self._wake.set()

    def _retention_loop(self) -> None:
        interval = self.config.alert_interval.total_seconds()
        while not self._stop.wait(interval):
            self.retention_tick()

    def retention_tick(self) -> None:
        """Enforce retention when this process leads and it is due (the retention thread)."""
        if not self.leading.is_set():
            return
        # Retention may rightly run past REQUEST_TIMEOUT (a first delete after a backlog, a
        # wait for another worker's policy lock): outside PostgreSQL's statement_timeout.
        with self.repos.unbounded_statements():
            self._guarded("retention", self._retention)

    def _should_stop_work(self) -> bool:
        """Between two chunks or two deliveries: stopping, or no longer the leader (a former
        leader's claimed, in-flight item stays its own; the rest is the new leader's)."""
        return self._stop.is_set() or not self.leading.is_set()

    def _retention(self) -> None:
        now = self.clock()
        if self._next_retention is not None and now < self._next_retention:
            return
        if self._next_retention is None:  # first time as leader: sync the TimescaleDB policy
            from miniobserv.server.storage import sync_retention

            sync_retention(self.repos, self.config)
        self._next_retention = now + RETENTION_EVERY
        deleted = self.repos.fleet.delete_expired(now - self.config.metrics_retention,
                                                  now - self.config.logs_retention,
                                                  now - OUTBOX_KEPT,
                                                  should_stop=self._should_stop_work)
        if deleted:
            log.info("retention: deleted %d expired rows", deleted)
        packed = self.repos.fleet.pack_samples(now - self.config.metrics_pack_after,
                                               should_stop=self._should_stop_work)
        if packed:
            log.info("retention: packed %d samples into blocks", packed)

    def _deliver_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(DELIVERY_POLL_S)
            self._wake.clear()
            if self.leading.is_set() and not self._stop.is_set():
                self._guarded("delivery", lambda: self.deliverer.deliver_due(
                    self.clock(), self._should_stop_work))

    def _guarded(self, what: str, work: Callable[[], object]) -> None:
        """Run ``work``; a store outage or bug is logged and the loop goes on."""
        try:
            work()
        except StorageError as err:
            log.warning("alerting: %s skipped: %s", what, err)
        except Exception:  # a background thread has no caller to tell: log, keep going
            log.exception("alerting: %s failed", what)
