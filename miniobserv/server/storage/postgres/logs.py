"""Logs on PostgreSQL: COPY per batch, keyset pages by id, trigram-indexed search (SPEC §7).

A batch is one transaction: the ``batch_id`` claim in ``ingested_batches`` (kind ``logs``,
with the digest of the entries: a reused id with other content is a BatchConflict), the ``COPY`` of its entries (the identity column numbers them in batch order) and the host's
``last_seen``. Queries are built from fixed SQL fragments; every value is a bound parameter.
Search is ``lower(message) LIKE lower(pattern)`` with ``\\``, ``%`` and ``_`` escaped, the
expression that migration 0002's GIN trigram index serves; ``lower()`` folds case by the
database's ``LC_CTYPE`` (ASCII only under the C locale).

Paging never skips an entry. Ids come from the sequence during COPY, but batches commit in
any order, so the newest committed id may lie above an id still in flight; a walk (or a
client polling for lines newer than the newest it saw) that passed that id would never see
it. So a first page answers only ids below a horizon under which every id is final
(committed or rolled back): each batch's transaction first takes a shared advisory lock
(writers never wait for each other), and a first page reads the sequence's last value, then
the transactions holding that lock at that moment, and waits until those have ended (those
that begin later take ids above it). Later pages (``cursor``) are below the horizon already.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC
from typing import Any

import psycopg

from miniobserv.model import LogBatch
from miniobserv.server.storage.base import (
    LogPage,
    LogQuery,
    LogRecord,
    StorageUnavailable,
    labels_text,
    log_page,
)
from miniobserv.server.storage.claims import logs_claim
from miniobserv.server.storage.postgres.db import Ingest, copy_batch, translate_errors

_COPY_LOGS = "COPY logs (time, host, level, message, path, labels) FROM STDIN"
WRITERS_LOCK_CLASS = 0x6D6F6C67  # "molg": pg_advisory_xact_lock_shared(class, 0) per batch
_WRITING = f"SELECT pg_advisory_xact_lock_shared({WRITERS_LOCK_CLASS}, 0)"  # constants
_LAST_ID = "SELECT pg_sequence_last_value(pg_get_serial_sequence('logs', 'id')::regclass)"
_WRITERS = f"""SELECT virtualtransaction FROM pg_locks WHERE locktype = 'advisory'
    AND classid = {WRITERS_LOCK_CLASS} AND objid = 0 AND objsubid = 2 AND granted"""
_STILL_WRITING = _WRITERS + " AND virtualtransaction = ANY(%s) LIMIT 1"
HORIZON_WAIT_S = 10.0  # longer than any batch's transaction; then the read answers 503
HORIZON_POLL_S = 0.002
_SELECT = "SELECT id, time, host, level, message, path, labels FROM logs"
# The only SQL a query is built from, one fragment per filter.
_FILTERS = {
    "cursor": "id < %(cursor)s",
    "host": "host = %(host)s",
    "levels": "level = ANY(%(levels)s)",
    "start": "time >= %(start)s",
    "end": "time <= %(end)s",
    "pattern": "lower(message) LIKE lower(%(pattern)s) ESCAPE '\\'",
}


def like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, with ``\\``, ``%`` and ``_`` literal."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class PostgresLogs:
    """Log entries in the ``logs`` table (a hypertable when TimescaleDB is present)."""

    def __init__(self, ingest: Ingest) -> None:
        self._ingest = ingest
        self._pool = ingest.pool

    def insert_batch(self, batch: LogBatch) -> int:
        """Store the batch in one transaction (COPY), or acknowledge a known ``batch_id``.

        Raises BatchConflict when that ``batch_id`` was stored with other entries.
        """
        rows = ((e.time, e.host, e.level, e.message, e.path, labels_text(e.labels))
                for e in batch.entries)
        copy_batch(self._ingest, logs_claim(batch), batch.host, _COPY_LOGS, rows,
                   first=_WRITING)
        return len(batch.entries)

    def query(self, query: LogQuery) -> LogPage:
        """Newest first by id, at most ``query.limit`` entries; see LogsRepository.query.

        A first page answers only ids under :func:`final_horizon`.
        """
        with translate_errors(), self._pool.connection() as conn:
            if query.cursor is None:
                query = replace(query, cursor=final_horizon(conn))
            statement, params = build_query(query)
            rows = conn.execute(statement, params).fetchall()
        return log_page(map(_record, rows), query)


def final_horizon(conn: psycopg.Connection[Any]) -> int:
    """An id under which every id is final: nothing below it can still commit.

    The sequence's last value first, then the batches writing at that moment, waited for;
    raises StorageUnavailable if they take longer than HORIZON_WAIT_S.
    """
    row = conn.execute(_LAST_ID).fetchone()
    last = 0 if row is None or row[0] is None else int(row[0])
    writing = [r[0] for r in conn.execute(_WRITERS).fetchall()]
    deadline = time.monotonic() + HORIZON_WAIT_S
    while writing and conn.execute(_STILL_WRITING, (writing,)).fetchone() is not None:
        if time.monotonic() > deadline:
            raise StorageUnavailable("log batches still being written")
        time.sleep(HORIZON_POLL_S)
    return last + 1


def build_query(query: LogQuery) -> tuple[str, dict[str, Any]]:
    """The SQL of ``query`` (fixed fragments only) and its parameters."""
    levels = query.levels()
    values: dict[str, Any] = {
        "cursor": query.cursor, "host": query.host,
        "levels": list(levels) if levels is not None else None,
        "start": query.start, "end": query.end,
        "pattern": like_pattern(query.search) if query.search else None,
    }
    params = {key: value for key, value in values.items() if value is not None}
    where = " AND ".join(_FILTERS[key] for key in params)
    statement = f"{_SELECT}{' WHERE ' + where if where else ''} ORDER BY id DESC LIMIT %(limit)s"
    params["limit"] = query.limit + 1  # one more tells whether a next page exists
    return statement, params


def _record(row: tuple[Any, ...]) -> LogRecord:
    return LogRecord(id=row[0], time=row[1].astimezone(UTC), host=row[2], level=row[3],
                     message=row[4], path=row[5], labels=row[6] or {})
