"""SQLite side of the fleet: hosts, newest values, alert state, outbox, retention, leader.

The newest point of every series is one statement: the matching series, then one probe of
each one's key range of ``samples`` from its newest end. Retention deletes samples by ranges
of series ids, in chunks. The alerting leader holds an exclusive
``fcntl.flock`` on ``<database>.alerting.lock``: the kernel releases it when the process
dies, so another process sharing the file takes over at its next attempt.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from miniobserv.server.storage.base import (
    AlertState,
    HostSeen,
    HostState,
    LatestValue,
    OutboxItem,
    Outgoing,
    to_micros,
)
from miniobserv.server.storage.fleet_common import (
    delete_in_chunks,
    expired_rows,
    never,
    outbox_status,
)
from miniobserv.server.storage.shaping import canonical_labels
from miniobserv.server.storage.sqlite.db import SQLiteDatabase, from_micros

log = logging.getLogger(__name__)

# Per matching series (name, host and label filters on ``series``, read from its unique
# index (host, name, labels_text) in that order), its newest sample: one probe of the key
# (series_id, time) from its end, kept when within the window. One row per series, sorted.
_LATEST = """SELECT r.host, r.name, r.labels_text, s.time, s.value
    FROM series AS r CROSS JOIN samples AS s
    WHERE {where} AND s.series_id = r.id AND s.time = (
        SELECT time FROM samples WHERE series_id = r.id ORDER BY time DESC LIMIT 1)
      AND s.time >= :since
    ORDER BY r.host, r.name, r.labels_text{limit}"""
# One retention chunk: expired samples of the series from id :first on, in key order, each
# series' expired rows being the start of its key range (nothing newer is read).
_EXPIRED_SAMPLES = """SELECT s.series_id, s.time FROM series AS r CROSS JOIN samples AS s
    WHERE r.id >= :first AND s.series_id = r.id AND s.time < :before
    ORDER BY r.id, s.time LIMIT :limit"""
_LAST_EXPIRED = f"SELECT max(series_id) FROM ({_EXPIRED_SAMPLES})"
_DELETE_EXPIRED = f"DELETE FROM samples WHERE (series_id, time) IN ({_EXPIRED_SAMPLES})"
_UPSERT_STATE = """INSERT INTO alert_states (rule_key, host, labels_key, state, value, since,
        updated_at, last_notified) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (rule_key, host, labels_key) DO UPDATE SET state = excluded.state,
        value = excluded.value, since = excluded.since, updated_at = excluded.updated_at,
        last_notified = excluded.last_notified"""
_UPSERT_HOST = """INSERT INTO host_states (host, down, since) VALUES (?, ?, ?)
    ON CONFLICT (host) DO UPDATE SET down = excluded.down, since = excluded.since"""
_QUEUE = """INSERT INTO notification_outbox (channel, payload, status, next_attempt_at,
    created_at) VALUES (?, ?, 'pending', ?, ?)"""
# The claim and the finish of postgres_fleet, under BEGIN IMMEDIATE (one writer at a time);
# the lease runs on this machine's clock, the only one that opens the file.
_CLAIM = """UPDATE notification_outbox SET claimed_by = ?, claimed_until = ?
    WHERE id = ? AND status = 'pending' AND (claimed_until IS NULL OR claimed_until <= ?)"""
_FINISH = """UPDATE notification_outbox SET attempts = attempts + 1, status = ?,
    next_attempt_at = coalesce(?, next_attempt_at), finished_at = ?, last_error = ?,
    claimed_by = NULL, claimed_until = NULL
    WHERE id = ? AND claimed_by IS coalesce(?, claimed_by)"""


def _micros(time: datetime | None) -> int | None:
    return None if time is None else to_micros(time)


class SQLiteFleet:
    """The fleet repository over the process's SQLite connections."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    def last_seen(self) -> list[HostSeen]:
        with self._db.read() as conn:
            rows = conn.execute("SELECT host, last_seen FROM hosts ORDER BY host").fetchall()
        return [HostSeen(host, from_micros(seen)) for host, seen in rows]

    def latest(self, since: datetime, *, name: str | None = None, host: str | None = None,
               labels: Sequence[tuple[str, str]] = (),
               limit: int | None = None) -> list[LatestValue]:
        """One statement: the matching series, then each one's newest sample (one key probe).

        Label filters compare ``json_extract`` of ``series.labels_text`` per key. Sorted by
        SQLite's BINARY collation of UTF-8 text, which is code-point order (as merge_latest).
        """
        clauses = []
        params: dict[str, Any] = {"since": to_micros(since), "name": name, "host": host,
                                  "limit": limit}
        if name is not None:
            clauses.append("r.name = :name")
        if host is not None:
            clauses.append("r.host = :host")
        for index, (key, value) in enumerate(labels):
            params[f"key{index}"] = '$."' + key.replace('"', "") + '"'
            params[f"value{index}"] = value
            clauses.append(f"json_extract(r.labels_text, :key{index}) = :value{index}")
        statement = _LATEST.format(where=" AND ".join(clauses) or "true",
                                   limit="" if limit is None else " LIMIT :limit")
        with self._db.read() as conn:
            rows = conn.execute(statement, params).fetchall()
        parsed: dict[str, dict[str, str]] = {}  # label sets shared by many hosts: parsed once
        return [LatestValue(h, n, parsed.get(text) or parsed.setdefault(text, json.loads(text)),
                            from_micros(t), float(v)) for h, n, text, t, v in rows]

    def alert_states(self) -> list[AlertState]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT rule_key, host, labels_key, state, value, since, updated_at,"
                " last_notified FROM alert_states").fetchall()
        return [AlertState(key, host, json.loads(labels), state, value, from_micros(since),
                           from_micros(updated), notified)
                for key, host, labels, state, value, since, updated, notified in rows]

    def host_states(self) -> list[HostState]:
        with self._db.read() as conn:
            rows = conn.execute("SELECT host, down, since FROM host_states").fetchall()
        return [HostState(host, bool(down), from_micros(since)) for host, down, since in rows]

    def save_cycle(self, alerts: Sequence[AlertState], hosts: Sequence[HostState],
                   outbox: Sequence[Outgoing], rule_keys: Sequence[str]) -> None:
        """One transaction: states, host announcements and the deliveries they cause."""
        keep = list(rule_keys)
        with self._db.write() as conn:
            conn.execute(f"DELETE FROM alert_states WHERE rule_key NOT IN "
                         f"({', '.join('?' * len(keep))})", keep)
            conn.executemany(_UPSERT_STATE, [
                (a.rule_key, a.host, canonical_labels(a.labels), a.state, a.value,
                 to_micros(a.since), to_micros(a.updated_at), a.last_notified) for a in alerts])
            conn.executemany(_UPSERT_HOST, [(h.host, int(h.down), to_micros(h.since))
                                            for h in hosts])
            conn.executemany(_QUEUE, [(o.channel, json.dumps(o.payload), to_micros(o.created_at),
                                       to_micros(o.created_at)) for o in outbox])

    def pending_notifications(self, limit: int = 100) -> list[OutboxItem]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT id, channel, payload, attempts, next_attempt_at FROM notification_outbox"
                " WHERE status = 'pending' ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [OutboxItem(item_id, channel, json.loads(payload), attempts, from_micros(due))
                for item_id, channel, payload, attempts, due in rows]

    def claim_notification(self, item_id: int, claim: str, lease_s: float) -> bool:
        now = time.time_ns() // 1000
        with self._db.write() as conn:
            return conn.execute(_CLAIM, (claim, now + round(lease_s * 1e6), item_id,
                                         now)).rowcount == 1

    def finish_notification(self, item_id: int, now: datetime, *, delivered: bool,
                            retry_at: datetime | None = None, error: str | None = None,
                            claim: str | None = None) -> bool:
        status = outbox_status(delivered, retry_at)
        finished = None if status == "pending" else to_micros(now)
        with self._db.write() as conn:
            return conn.execute(_FINISH, (status, _micros(retry_at), finished, error, item_id,
                                          claim)).rowcount == 1

    def delete_expired(self, metrics_before: datetime, logs_before: datetime,
                       outbox_before: datetime, *,
                       should_stop: Callable[[], bool] | None = None) -> int:
        """Chunked deletes (SQLite has no retention of its own): each chunk is one short
        write transaction, so ingest is never held up for long. Samples go by ranges of
        series ids, reading only the expired start of each series' key range."""
        deleted = 0
        stop = should_stop or never
        for table, condition, before in expired_rows(metrics_before, logs_before,
                                                     outbox_before):
            if table == "samples":
                assert before is not None
                deleted += self._delete_samples(to_micros(before), stop)
                continue
            where = condition.format("?")
            statement = (f"DELETE FROM {table} WHERE rowid IN"  # constants only
                         f" (SELECT rowid FROM {table} WHERE {where} LIMIT ?)")
            params = () if before is None else (to_micros(before),)

            def chunk(limit: int, statement: str = statement,
                      params: tuple[int, ...] = params) -> int:
                with self._db.write() as conn:
                    return int(conn.execute(statement, (*params, limit)).rowcount)

            deleted += delete_in_chunks(chunk, stop)
        return deleted

    def _delete_samples(self, before: int, should_stop: Callable[[], bool]) -> int:
        """Samples older than ``before`` (µs), :data:`RETENTION_CHUNK` a transaction, series
        by series from the lowest id; each chunk resumes at the last series of the one
        before (which may have more expired rows)."""
        first = 0

        def chunk(limit: int) -> int:
            nonlocal first
            params = {"first": first, "before": before, "limit": limit}
            with self._db.write() as conn:
                last = conn.execute(_LAST_EXPIRED, params).fetchone()[0]
                if last is None:
                    return 0
                count = int(conn.execute(_DELETE_EXPIRED, params).rowcount)
            first = int(last)
            return count

        return delete_in_chunks(chunk, should_stop)

    def pack_samples(self, before: datetime, *,
                     should_stop: Callable[[], bool] | None = None) -> int:
        return 0  # WITHOUT ROWID rows of ~30 B a point: nothing to pack

    def leader_lock(self) -> FileLeaderLock:
        return FileLeaderLock(self._db.path + ".alerting.lock")


class FileLeaderLock:
    """An exclusive, non-blocking ``flock`` on a file next to the database."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            log.warning("alerting: cannot open the lock file %s: %s", self.path, err)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the lock
