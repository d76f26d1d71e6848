"""Logs on PostgreSQL: COPY per batch, keyset pages by id, trigram-indexed search (SPEC §7).

A batch is one transaction: the ``batch_id`` claim in ``ingested_batches`` (kind ``logs``,
with the digest of the entries: a reused id with other content is a BatchConflict), the ``COPY`` of its entries (the identity column numbers them in batch order) and the host's
``last_seen``. Queries are built from fixed SQL fragments; every value is a bound parameter.
Search is ``lower(message) LIKE lower(pattern)`` with ``\\``, ``%`` and ``_`` escaped, the
expression that migration 0002's GIN trigram index serves; ``lower()`` folds case by the
database's ``LC_CTYPE`` (ASCII only under the C locale).
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from miniobserv.model import LogBatch
from miniobserv.server.storage.base import LogPage, LogQuery, LogRecord, labels_text, log_page
from miniobserv.server.storage.claims import logs_claim
from miniobserv.server.storage.postgres.db import Ingest, copy_batch, translate_errors

_COPY_LOGS = "COPY logs (time, host, level, message, path, labels) FROM STDIN"
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
        copy_batch(self._ingest, logs_claim(batch), batch.host, _COPY_LOGS, rows)
        return len(batch.entries)

    def query(self, query: LogQuery) -> LogPage:
        """Newest first by id, at most ``query.limit`` entries; see LogsRepository.query."""
        statement, params = build_query(query)
        with translate_errors(), self._pool.connection() as conn:
            rows = conn.execute(statement, params).fetchall()
        return log_page(map(_record, rows), query)


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
