"""SQLite repositories: stdlib ``sqlite3`` in WAL mode (SPEC §7).

The same files as :mod:`miniobserv.server.storage.postgres`: ``db`` (connections, one
``BEGIN IMMEDIATE`` transaction per batch), ``metrics``, ``logs`` and ``fleet``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta

from miniobserv.server.storage.series import Limits
from miniobserv.server.storage.sqlite.db import SQLiteDatabase, database_path
from miniobserv.server.storage.sqlite.fleet import SQLiteFleet
from miniobserv.server.storage.sqlite.logs import SQLiteLogs
from miniobserv.server.storage.sqlite.metrics import SQLiteMetrics


class SQLiteRepositories:
    """Every SQLite repository of one process, sharing one :class:`SQLiteDatabase`."""

    def __init__(self, database_url: str, *, statement_timeout: timedelta | None = None,
                 limits: Limits | None = None) -> None:
        self.db = SQLiteDatabase(database_path(database_url),
                                 statement_timeout=statement_timeout, limits=limits)
        self.metrics = SQLiteMetrics(self.db)
        self.fleet = SQLiteFleet(self.db)
        self.logs = SQLiteLogs(self.db)

    def unbounded_statements(self) -> AbstractContextManager[None]:
        """Nothing to lift: SQLite's writes (retention's included) are never cut."""
        return nullcontext()

    def ping(self) -> None:
        """Raise StorageUnavailable unless the file answers a query now."""
        with self.db.read() as conn:
            conn.execute("SELECT 1 FROM hosts LIMIT 1").fetchall()

    def sync_retention(self, retention: timedelta, table: str = "samples") -> bool:
        """Always False: on SQLite the maintenance job enforces retention."""
        return False

    def close(self) -> None:
        self.db.close()
