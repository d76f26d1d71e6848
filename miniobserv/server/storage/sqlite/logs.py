"""Logs on SQLite: one ``BEGIN IMMEDIATE`` per batch, keyset pages by rowid (SPEC §7).

``logs.id`` is an AUTOINCREMENT rowid, so ids grow with every insert and are never reused.
Times are INTEGER microseconds since the UTC epoch, as for metrics. Search is
``instr(lower(message), lower(?)) > 0``: a plain substring test, so ``%`` and ``_`` need no
escaping, and SQLite's ``lower()`` folds ASCII letters only (``É`` does not match ``é``),
which is what PostgreSQL answers under the C locale.
"""

from __future__ import annotations

import json
from typing import Any

from miniobserv.model import LogBatch
from miniobserv.server.storage.base import (
    LogPage,
    LogQuery,
    LogRecord,
    labels_text,
    log_page,
    to_micros,
)
from miniobserv.server.storage.claims import logs_claim
from miniobserv.server.storage.sqlite.db import SQLiteDatabase, from_micros, insert_batch

_INSERT = """INSERT INTO logs (time, host, level, message, path, labels)
    VALUES (?, ?, ?, ?, ?, ?)"""
_SELECT = "SELECT id, time, host, level, message, path, labels FROM logs"


class SQLiteLogs:
    """Log entries in the ``logs`` table of a SQLite file."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    def insert_batch(self, batch: LogBatch) -> int:
        """Store the batch in one transaction, or acknowledge a known ``batch_id``."""
        rows = ((to_micros(e.time), e.host, e.level, e.message, e.path, labels_text(e.labels))
                for e in batch.entries)  # read inside the transaction, as PostgreSQL's COPY
        insert_batch(self._db, logs_claim(batch), batch.host, _INSERT, lambda ids: rows)
        return len(batch.entries)

    def query(self, query: LogQuery) -> LogPage:
        """Newest first by id, at most ``query.limit`` entries; see LogsRepository.query."""
        where, params = _where(query)
        statement = f"{_SELECT}{where} ORDER BY id DESC LIMIT :limit"
        params["limit"] = query.limit + 1  # one more tells whether a next page exists
        with self._db.read() as conn:
            rows = conn.execute(statement, params)
            try:  # read lazily, no further than the page's bounds
                return log_page(map(_record, rows), query)
            finally:
                rows.close()  # ends the statement (and its read snapshot) at once


def _where(query: LogQuery) -> tuple[str, dict[str, Any]]:
    """The WHERE clause (fixed fragments, one placeholder per value) and its parameters."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    for key, clause, value in (
            ("cursor", "id < :cursor", query.cursor),
            ("host", "host = :host", query.host),
            ("start", "time >= :start", query.start and to_micros(query.start)),
            ("end", "time <= :end", query.end and to_micros(query.end)),
            ("search", "instr(lower(message), lower(:search)) > 0", query.search or None)):
        if value is not None:
            clauses.append(clause)
            params[key] = value
    levels = query.levels()
    if levels is not None:
        params.update({f"level{i}": level for i, level in enumerate(levels)})
        clauses.append(f"level IN ({', '.join(f':level{i}' for i in range(len(levels)))})")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _record(row: tuple[Any, ...]) -> LogRecord:
    return LogRecord(id=row[0], time=from_micros(row[1]), host=row[2], level=row[3],
                     message=row[4], path=row[5], labels=json.loads(row[6]))
