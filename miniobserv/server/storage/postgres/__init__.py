"""PostgreSQL repositories: psycopg 3 with a psycopg_pool connection pool (SPEC §7).

The same files as :mod:`miniobserv.server.storage.sqlite`: ``db`` (the pool, one transaction
per batch, TimescaleDB policies), ``metrics``, ``logs`` and ``fleet``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import timedelta

from miniobserv.server.storage.postgres.db import Ingest, PostgresDatabase
from miniobserv.server.storage.postgres.fleet import PostgresFleet
from miniobserv.server.storage.postgres.logs import PostgresLogs
from miniobserv.server.storage.postgres.metrics import PostgresMetrics
from miniobserv.server.storage.series import Limits


class PostgresRepositories:
    """Every PostgreSQL repository of one process, sharing one :class:`PostgresDatabase`."""

    def __init__(self, database_url: str, *, min_size: int = 1, max_size: int = 10,
                 statement_timeout: timedelta | None = None,
                 limits: Limits | None = None) -> None:
        self.db = PostgresDatabase(database_url, min_size=min_size, max_size=max_size,
                                   statement_timeout=statement_timeout)
        self.pool = self.db.pool
        ingest = Ingest(self.pool, limits or Limits())
        self.metrics = PostgresMetrics(ingest)
        self.fleet = PostgresFleet(self.pool, database_url)
        self.logs = PostgresLogs(ingest)

    def open(self) -> PostgresRepositories:
        """Open the pool without waiting: the server starts even while the database is down."""
        self.db.open()
        return self

    def unbounded_statements(self) -> AbstractContextManager[None]:
        """Connections this thread takes inside the block have no statement_timeout."""
        return self.db.unbounded_statements()

    def ping(self) -> None:
        self.db.ping()

    def has_timescaledb(self) -> bool:
        return self.db.has_timescaledb()

    def sync_retention(self, retention: timedelta, table: str = "samples") -> bool:
        return self.db.sync_retention(retention, table)

    def close(self) -> None:
        self.db.close()
