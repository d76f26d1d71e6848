"""PostgreSQL side of the fleet: hosts, newest values, alert state, outbox, retention, leader.

The newest point of every matching series is one probe of the key ``(series_id, time)`` per
series (``LATERAL ... ORDER BY time DESC LIMIT 1``), the series resolved first. The
alerting leader holds a session-level ``pg_try_advisory_lock`` on a dedicated connection:
PostgreSQL releases it when that connection or its process dies, so another worker takes
over at its next attempt.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from miniobserv.server.storage.base import (
    AlertState,
    HostSeen,
    HostState,
    LatestValue,
    OutboxItem,
    Outgoing,
)
from miniobserv.server.storage.fleet_common import (
    delete_in_chunks,
    expired_rows,
    never,
    outbox_status,
)
from miniobserv.server.storage.postgres import blocks
from miniobserv.server.storage.postgres.db import (
    CONNECT_TIMEOUT_S,
    autocommit,
    is_hypertable,
    read_rows,
    translate_errors,
)
from miniobserv.server.storage.shaping import canonical_labels, containment

log = logging.getLogger(__name__)

# pg_advisory_lock key of the alerting leader ("miniobsa" in ASCII).
LEADER_LOCK_KEY = 0x6D696E696F627361

# One row per series (its canonical labels text), in code-point order (COLLATE "C"): what
# merge_latest answers on the other stores, so LIMIT keeps the same series.
_LATEST = """SELECT s.host, s.name, s.labels_text, x.time, x.value FROM series AS s
    CROSS JOIN LATERAL {newest} AS x
    WHERE true{filters}
    ORDER BY s.host COLLATE "C", s.name COLLATE "C", s.labels_text COLLATE "C"
    LIMIT %(limit)s"""
_NEWEST = """(SELECT time, value FROM samples
    WHERE series_id = s.id AND time >= %(since)s ORDER BY time DESC LIMIT 1)"""
_UPSERT_STATE = """INSERT INTO alert_states (rule_key, host, labels_key, state, value, since,
        updated_at, last_notified) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (rule_key, host, labels_key) DO UPDATE SET state = excluded.state,
        value = excluded.value, since = excluded.since, updated_at = excluded.updated_at,
        last_notified = excluded.last_notified"""
_UPSERT_HOST = """INSERT INTO host_states (host, down, since) VALUES (%s, %s, %s)
    ON CONFLICT (host) DO UPDATE SET down = excluded.down, since = excluded.since"""
_QUEUE = """INSERT INTO notification_outbox (channel, payload, status, next_attempt_at,
    created_at) VALUES (%s, %s, 'pending', %s, %s)"""
# A claim is one conditional UPDATE: of two servers claiming a row at once, the second waits
# for the first's row lock, re-reads the row and finds the lease taken (READ COMMITTED).
# The lease runs on the database's clock, so servers' clocks never need to agree.
_CLAIM = """UPDATE notification_outbox SET claimed_by = %s,
        claimed_until = clock_timestamp() + make_interval(secs => %s)
    WHERE id = %s AND status = 'pending'
        AND (claimed_until IS NULL OR claimed_until <= clock_timestamp())"""
# With a claim, only while this claimer still holds the row (a lease that ran out and was
# taken over is the new claimer's to record); without one (tools, tests), unconditionally.
_FINISH = """UPDATE notification_outbox SET attempts = attempts + 1, status = %s,
    next_attempt_at = coalesce(%s, next_attempt_at), finished_at = %s, last_error = %s,
    claimed_by = NULL, claimed_until = NULL
    WHERE id = %s AND claimed_by IS NOT DISTINCT FROM coalesce(%s, claimed_by)"""


class PostgresFleet:
    """The fleet repository over the process's connection pool."""

    def __init__(self, pool: ConnectionPool, conninfo: str) -> None:
        self._pool = pool
        self._conninfo = conninfo
        self._packed: bool | None = None  # whether samples are packed (blocks.py), once known

    def _uses_blocks(self, conn: psycopg.Connection[Any] | None = None) -> bool:
        """Whether samples are packed here (looked up once, on ``conn`` or a pooled one)."""
        if self._packed is None:
            if conn is not None:
                self._packed = blocks.uses_blocks(conn)
            else:
                with translate_errors(), self._pool.connection() as pooled:
                    self._packed = blocks.uses_blocks(pooled)
        return self._packed

    def last_seen(self) -> list[HostSeen]:
        with translate_errors(), self._pool.connection() as conn:
            rows = conn.execute("SELECT host, last_seen FROM hosts").fetchall()
        return sorted((HostSeen(host, seen.astimezone(UTC)) for host, seen in rows),
                      key=lambda h: h.host)

    def latest(self, since: datetime, *, name: str | None = None, host: str | None = None,
               labels: Sequence[tuple[str, str]] = (),
               limit: int | None = None) -> list[LatestValue]:
        """One index probe per matching series; label filters are one ``@>`` each."""
        params: dict[str, Any] = {"since": since, "name": name, "host": host, "limit": limit}
        filters: list[sql.Composable] = []
        if name is not None:
            filters.append(sql.SQL(" AND s.name = %(name)s"))
        if host is not None:
            filters.append(sql.SQL(" AND s.host = %(host)s"))
        for index, (key, value) in enumerate(labels):
            params[f"label{index}"] = containment(key, value)
            filters.append(sql.SQL(" AND s.labels @> {}::jsonb").format(
                sql.Placeholder(f"label{index}")))
        newest = blocks.LATEST_POINT if self._uses_blocks() else _NEWEST
        statement = sql.SQL(_LATEST).format(newest=sql.SQL(newest),
                                            filters=sql.Composed(filters))
        rows = read_rows(self._pool, statement, params)
        # A fleet repeats few label sets: each is parsed once, its dict shared (read-only).
        parsed: dict[str, dict[str, str]] = {}
        values = []
        for host_name, metric, text, time, value in rows:
            labels_of = parsed.get(text)
            if labels_of is None:
                labels_of = parsed[text] = json.loads(text)
            values.append(LatestValue(host_name, metric, labels_of, time.astimezone(UTC),
                                      float(value)))
        return values

    def alert_states(self) -> list[AlertState]:
        with translate_errors(), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT rule_key, host, labels_key, state, value, since, updated_at,"
                " last_notified FROM alert_states").fetchall()
        return [AlertState(key, host, json.loads(labels), state, value, since.astimezone(UTC),
                           updated.astimezone(UTC), notified)
                for key, host, labels, state, value, since, updated, notified in rows]

    def host_states(self) -> list[HostState]:
        with translate_errors(), self._pool.connection() as conn:
            rows = conn.execute("SELECT host, down, since FROM host_states").fetchall()
        return [HostState(host, bool(down), since.astimezone(UTC)) for host, down, since in rows]

    def save_cycle(self, alerts: Sequence[AlertState], hosts: Sequence[HostState],
                   outbox: Sequence[Outgoing], rule_keys: Sequence[str]) -> None:
        """One transaction: states, host announcements and the deliveries they cause."""
        with translate_errors(), self._pool.connection() as conn, conn.transaction():
            conn.execute("DELETE FROM alert_states WHERE NOT (rule_key = ANY(%s))",
                         (list(rule_keys),))
            with conn.cursor() as cur:
                cur.executemany(_UPSERT_STATE, [
                    (a.rule_key, a.host, canonical_labels(a.labels), a.state, a.value, a.since,
                     a.updated_at, a.last_notified) for a in alerts])
                cur.executemany(_UPSERT_HOST, [(h.host, h.down, h.since) for h in hosts])
                cur.executemany(_QUEUE, [(o.channel, json.dumps(o.payload), o.created_at,
                                          o.created_at) for o in outbox])

    def pending_notifications(self, limit: int = 100) -> list[OutboxItem]:
        with translate_errors(), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT id, channel, payload, attempts, next_attempt_at FROM notification_outbox"
                " WHERE status = 'pending' ORDER BY id LIMIT %s", (limit,)).fetchall()
        return [OutboxItem(item_id, channel, json.loads(payload), attempts, due.astimezone(UTC))
                for item_id, channel, payload, attempts, due in rows]

    def claim_notification(self, item_id: int, claim: str, lease_s: float) -> bool:
        with translate_errors(), self._pool.connection() as conn:
            return conn.execute(_CLAIM, (claim, lease_s, item_id)).rowcount == 1

    def finish_notification(self, item_id: int, now: datetime, *, delivered: bool,
                            retry_at: datetime | None = None, error: str | None = None,
                            claim: str | None = None) -> bool:
        status = outbox_status(delivered, retry_at)
        finished = None if status == "pending" else now
        with translate_errors(), self._pool.connection() as conn:
            return conn.execute(_FINISH, (status, retry_at, finished, error, item_id,
                                          claim)).rowcount == 1

    def delete_expired(self, metrics_before: datetime, logs_before: datetime,
                       outbox_before: datetime, *,
                       should_stop: Callable[[], bool] | None = None) -> int:
        """Chunked range deletes, each chunk its own transaction (autocommit), except on
        hypertables (a TimescaleDB policy drops their chunks); packed samples go by whole
        blocks, once their window ended before ``metrics_before``."""
        deleted = 0
        with translate_errors(), self._pool.connection() as conn, autocommit(conn):
            hypertables = {t for t in ("samples", "logs") if is_hypertable(conn, t)}
            expired = expired_rows(metrics_before, logs_before, outbox_before)
            if self._uses_blocks(conn):
                expired.insert(1, ("sample_blocks", blocks.EXPIRED_BLOCKS, metrics_before))
            for table, condition, before in expired:
                if table not in hypertables:
                    deleted += delete_in_chunks(_chunk_deleter(conn, table, condition,
                                                               before), should_stop or never)
        return deleted

    def pack_samples(self, before: datetime, *,
                     should_stop: Callable[[], bool] | None = None) -> int:
        """Pack the samples of windows ended before ``before`` into blocks on plain
        PostgreSQL (blocks.py), a bounded batch of series per transaction; the narrow rows
        packed (0 on TimescaleDB, which compresses its chunks itself)."""
        with translate_errors(), self._pool.connection() as conn, autocommit(conn):
            if not self._uses_blocks(conn):
                return 0
            return blocks.pack(conn, before, should_stop or never)

    def leader_lock(self) -> PostgresLeaderLock:
        return PostgresLeaderLock(self._conninfo)


def _chunk_deleter(conn: psycopg.Connection[Any], table: str, condition: str,
                   before: datetime | None) -> Callable[[int], int]:
    """A function deleting up to ``limit`` rows of ``table`` matching ``condition``."""
    statement = sql.SQL("DELETE FROM {table} WHERE ctid = ANY(ARRAY("
                        "SELECT ctid FROM {table} WHERE {where} LIMIT %s))").format(
        table=sql.Identifier(table), where=sql.SQL(condition.format("%s")))
    params = () if before is None else (before,)
    return lambda limit: int(conn.execute(statement, (*params, limit)).rowcount)


class PostgresLeaderLock:
    """``pg_try_advisory_lock`` on a connection of its own, held while this process leads."""

    def __init__(self, conninfo: str, key: int = LEADER_LOCK_KEY) -> None:
        self._conninfo = conninfo
        self._key = key
        self._conn: psycopg.Connection[Any] | None = None

    def acquire(self) -> bool:
        """Take the lock, or check that the connection holding it is still alive."""
        try:
            if self._conn is not None:
                self._conn.execute("SELECT 1")
                return True
            conn = psycopg.connect(self._conninfo, autocommit=True,
                                   connect_timeout=CONNECT_TIMEOUT_S,
                                   application_name="miniobserv-alerting")
        except psycopg.Error as err:
            if self._conn is not None:
                log.warning("alerting: lost the leader lock's connection: %s", err)
            self._drop()
            return False
        return self._try(conn)

    def _try(self, conn: psycopg.Connection[Any]) -> bool:
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
        except psycopg.Error:
            conn.close()
            return False
        if row is None or not row[0]:
            conn.close()
            return False
        self._conn = conn
        return True

    def release(self) -> None:
        """Give the lock up (closing its session releases it)."""
        self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:  # already gone, and the lock with it
                pass
